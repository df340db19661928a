"""WGAN-div adversarial loss on 3D shapes (Gao et al. 2020, eq. 11; Wu et al. 2018).

Book chapter: ``book/06_losses.ipynb``.

A critic ``D`` (in Gao et al. a graph-convolutional encoder,
``facelab.models.gao2020.ShapeDiscriminator``) scores shapes; *real* shapes are
sampled from the linear 3DMM (:func:`sample_real_shapes`), *fake* ones are the
network's reconstructions. Eq. 11 is the WGAN-div min-max problem

    ``min_G max_D  E[D(s_real)] - E[D(s_fake)] - k E_u[||grad_u D(u)||^p]``

(written in the paper with the two expectations the other way round; facelab follows
Wu et al. 2018: real shapes score high). ``u`` is drawn uniformly on the straight
lines between real and fake samples. Unlike WGAN-GP the penalty has no target norm
of 1: it only bounds the critic's slope, with ``k = 2, p = 6`` the values recommended
by Wu et al. and used by Gao et al.

* :func:`wgan_div_critic_loss`: what the critic *minimises*,
  ``E[D(fake)] - E[D(real)] + k E[||grad D(u)||^p]``.
* :func:`wgan_div_generator_loss`: the paper's ``L_adv = -E[D(fake)]``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from facelab.checks import check_tensor

#: WGAN-div penalty weight ``k`` (Wu et al. 2018; Gao et al. 2020).
WGAN_DIV_K = 2.0
#: WGAN-div penalty power ``p`` (Wu et al. 2018; Gao et al. 2020).
WGAN_DIV_P = 6.0


def _check_kp(k, p) -> None:
    if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k: expected a number >= 0, got {k!r}")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not p > 1:
        raise ValueError(f"p: expected a number > 1, got {p!r}")


def _scores(critic: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, name: str) -> torch.Tensor:
    """``critic(x)`` as ``(B,)``; accepts ``(B,)`` or ``(B, 1)`` outputs."""
    out = critic(x)
    if not isinstance(out, torch.Tensor) or out.shape not in ((x.shape[0],), (x.shape[0], 1)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"critic: expected scores of shape ({x.shape[0]},) or ({x.shape[0]}, 1) for {name}, got {got}")
    return out.reshape(-1)


def wgan_div_critic_loss(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    k: float = WGAN_DIV_K,
    p: float = WGAN_DIV_P,
    generator: torch.Generator | None = None,
    return_parts: bool = False,
):
    """WGAN-div critic loss (Wu et al. 2018; Gao et al. 2020, eq. 11), to be minimised by the critic.

    ``E[D(fake)] - E[D(real)] + k * E_u[||grad_u D(u)||_2^p]`` with
    ``u = t * real + (1 - t) * fake``, ``t ~ U(0, 1)`` per sample. ``real`` and ``fake``
    are detached: this loss trains only the critic (use
    :func:`wgan_div_generator_loss` for the generator). The penalty is built with
    ``create_graph=True``, so its gradient reaches the critic's parameters.

    Args:
        critic: ``(B, ...) -> (B,)`` or ``(B, 1)`` scores, differentiable in its input.
        real: ``(B, ...)`` float, real samples (e.g. ``(B, V, 3)`` mm shapes).
        fake: the same shape, generated samples.
        k: penalty weight >= 0 (default :data:`WGAN_DIV_K`).
        p: penalty power > 1 (default :data:`WGAN_DIV_P`).
        generator: draws ``t`` (None: the global RNG).
        return_parts: also return a dict of detached scalars ``wdist``
            (``E[D(real)] - E[D(fake)]``, the Wasserstein estimate) and ``penalty``.

    Returns:
        ``()`` scalar, critic-score units (and the dict when ``return_parts``).

    >>> w = torch.tensor([0.3, 0.4])          # D(x) = w.x, so ||grad D|| = 0.5 everywhere
    >>> real, fake = torch.eye(2), torch.tensor([[2.0, 2.0], [-1.0, 0.0]])
    >>> round(wgan_div_critic_loss(lambda x: x @ w, real, fake).item(), 6)   # 0.55 - 0.35 + 2 * 0.5**6
    0.23125
    """
    check_tensor(real, "real", None)
    check_tensor(fake, "fake", tuple(real.shape))
    if real.dim() < 1 or real.shape[0] < 1:
        raise ValueError(f"real: expected a batch (B, ...) with B >= 1, got {tuple(real.shape)}")
    _check_kp(k, p)
    real, fake = real.detach(), fake.detach()
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    t = torch.rand(shape, generator=generator, dtype=real.dtype).to(real.device)
    with torch.enable_grad():
        u = (t * real + (1 - t) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(_scores(critic, u, "u").sum(), u, create_graph=True)
    grad_norm = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)
    penalty = k * grad_norm.pow(p).mean()
    wdist = _scores(critic, real, "real").mean() - _scores(critic, fake, "fake").mean()
    loss = penalty - wdist
    if return_parts:
        return loss, {"wdist": wdist.detach(), "penalty": penalty.detach()}
    return loss


def wgan_div_generator_loss(critic: Callable[[torch.Tensor], torch.Tensor], fake: torch.Tensor) -> torch.Tensor:
    """The adversarial loss of the generator, ``L_adv = -E[D(fake)]`` (Gao et al. 2020, eq. 11).

    Gradients flow into ``fake`` (and into the critic's parameters: step only the
    generator's optimiser with it, or freeze the critic).

    Args:
        critic: ``(B, ...) -> (B,)`` or ``(B, 1)`` scores.
        fake: ``(B, ...)`` float, generated samples (e.g. ``(B, V, 3)`` mm).

    Returns:
        ``()`` scalar, critic-score units.

    >>> wgan_div_generator_loss(lambda x: x.sum(dim=1), torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    tensor(-3.)
    """
    check_tensor(fake, "fake", None)
    if fake.dim() < 1 or fake.shape[0] < 1:
        raise ValueError(f"fake: expected a batch (B, ...) with B >= 1, got {tuple(fake.shape)}")
    return -_scores(critic, fake, "fake").mean()


def sample_real_shapes(morphable, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """"Real" shapes for the critic: random faces of the linear 3DMM (Gao et al. 2020, sec. 4).

    Identity and expression coefficients are ``N(0, std^2)`` (``morphable.sample``), so
    the shapes follow the model's Gaussian prior; their mean is the mean shape.

    Args:
        morphable: a :class:`~facelab.morphable.model.MorphableModel`.
        n: number of shapes, >= 1.
        generator: makes the draw deterministic (None: the global RNG).

    Returns:
        ``(n, V, 3)`` float, mm, on the morphable's device.

    >>> from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
    >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> sample_real_shapes(m, 2, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1353, 3])
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    coeffs = morphable.sample(n, generator)
    return morphable.shape(coeffs["alpha_id"], coeffs["alpha_exp"])


class WGANDivCriticLoss(nn.Module):
    """:func:`wgan_div_critic_loss` as a module.

    ``forward(critic, real, fake, generator=None) -> ()``.

    >>> WGANDivCriticLoss(k=1.0, p=2.0)(lambda x: x @ torch.tensor([0.3, 0.4]), torch.eye(2), torch.zeros(2, 2))
    tensor(-0.1000)
    """

    def __init__(self, k: float = WGAN_DIV_K, p: float = WGAN_DIV_P) -> None:
        super().__init__()
        _check_kp(k, p)
        self.k, self.p = float(k), float(p)

    def forward(self, critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return wgan_div_critic_loss(critic, real, fake, self.k, self.p, generator)

    def extra_repr(self) -> str:
        return f"k={self.k}, p={self.p}"


class WGANDivGeneratorLoss(nn.Module):
    """:func:`wgan_div_generator_loss` as a module: ``forward(critic, fake) -> ()``.

    >>> WGANDivGeneratorLoss()(lambda x: x[:, 0], torch.tensor([[1.0], [3.0]]))
    tensor(-2.)
    """

    def forward(self, critic, fake: torch.Tensor) -> torch.Tensor:
        return wgan_div_generator_loss(critic, fake)
