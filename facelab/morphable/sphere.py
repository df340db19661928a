"""The Sphere Face Model (SFM): a shape basis whose coefficients live on a hypersphere.

Book chapter: ``book/10_sir.ipynb``.

A PCA model's coefficients are Gaussian, while a recognition embedding is compared by its
*direction* (cosine). The SFM makes the shape coefficients such an embedding: with a basis
``B (3V, K)`` (mm per unit coefficient, columns *not* necessarily orthonormal),

    ``shape = mean + B alpha``,   ``alpha = r u``,   ``||u|| = 1``,

where the unit direction ``u`` carries the identity and the radius ``r`` (unitless) how far
the face is from the mean. Encoding is the least-squares (pseudo-inverse) projection onto
``B``; ``u`` and ``r`` are its direction and norm.

Stage 1 (:func:`fit_sfm_stage1`) learns ``B`` from 3D shapes with identity labels: ``B`` starts
as the PCA basis scaled by its standard deviations (so ``alpha`` starts as the standardised
PCA coefficients) and is trained with an angular-margin classification loss (CosFace or
ArcFace; one learnable unit direction per training identity) on ``u`` plus a reconstruction
loss. Stage 2, fine-tuning ``B`` with an image encoder, is the SIR training recipe
(``facelab.train.sir``); :class:`SphereFaceModel` is an ``nn.Module`` with ``basis`` a
``Parameter`` for that.

facelab's own definitions (the SFM paper is available to us only as an abstract, its code
is incomplete): the least-squares encoder, the CosFace/ArcFace head on ``u``, the
reconstruction-loss normalisation, the parametrisation of stage 1 inside the training
shapes' leading PCA subspace (:attr:`SFMConfig.subspace_factor`), the MorphableModel
export (:meth:`SphereFaceModel.to_morphable`) and the comparison protocol of
:func:`facelab.metrics.shape_models.sfm_vs_pca`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from facelab.checks import check_choice, check_positive, check_tensor
from facelab.morphable.model import MorphableModel

SFM_META_KEY = "sfm"
SFM_LOSSES = ("cosface", "arcface")
# Radii below this (unitless) are treated as zero when normalising alpha to u: a shape at
# the mean has no direction, and u = 0 is returned for it instead of NaN.
RADIUS_EPS = 1e-12


# =================================================================== the model
class SphereFaceModel(nn.Module):
    """A linear shape model with hyperspherical coefficients ``alpha = r u``.

    Args:
        mean: ``(V, 3)`` float, mm (a buffer).
        basis: ``(3V, K)`` float, mm per unit coefficient, rows interleaved per vertex
            (``3*v + c``) like :class:`~facelab.morphable.MorphableModel`; full column rank;
            an ``nn.Parameter`` (trained in stage 2).
        name: a short label.
        meta: free-form provenance (JSON-serialisable), kept by :meth:`to_morphable`.

    >>> sfm = SphereFaceModel(torch.zeros(4, 3), torch.eye(12)[:, :2] * 5.0)
    >>> shapes = sfm.decode(torch.tensor([[0.6, 0.8]]), torch.tensor([2.0]))  # (1, 4, 3) mm
    >>> u, r = sfm.encode(shapes)
    >>> u.tolist(), r.tolist()
    ([[0.6000, 0.8000]], [2.0000])
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, name: str = "sfm", meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_tensor(mean, "mean", ("V", 3))
        check_tensor(basis, "basis", (3 * mean.shape[0], "K"))
        if basis.shape[1] < 1:
            raise ValueError("basis: needs at least one column")
        if basis.shape[1] > basis.shape[0]:
            raise ValueError(f"basis: K = {basis.shape[1]} columns exceed 3V = {basis.shape[0]} rows")
        self.register_buffer("mean", mean.detach().clone())
        self.basis = nn.Parameter(basis.detach().clone().to(mean.dtype))
        self.name = name
        self.meta = dict(meta or {})

    @property
    def n_verts(self) -> int:
        return self.mean.shape[0]

    @property
    def n_shape(self) -> int:
        return self.basis.shape[1]

    # ------------------------------------------------------------ geometry
    def coefficients(self, shapes: torch.Tensor) -> torch.Tensor:
        """Least-squares coefficients ``alpha = argmin ||mean + B alpha - shape||``.

        Args:
            shapes: ``(N, V, 3)`` float, mm, in the model's frame.

        Returns:
            ``(N, K)`` float, unitless. Differentiable in ``shapes`` and ``basis`` (QR solve).
        """
        check_tensor(shapes, "shapes", ("N", self.n_verts, 3))
        x = (shapes - self.mean).reshape(shapes.shape[0], -1).to(self.basis.dtype)
        return _lstsq(self.basis, x)

    def encode(self, shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Direction and radius of each shape's coefficients.

        Args:
            shapes: ``(N, V, 3)`` float, mm.

        Returns:
            ``(u (N, K) unit vectors, r (N,) >= 0)``, unitless; ``alpha = r u``. A shape at
            the mean gets ``u = 0``.
        """
        return split_radius(self.coefficients(shapes))

    def decode(self, u: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        """``mean + B (r u)``.

        Args:
            u: ``(N, K)`` float, directions (normalised here; a zero row stays zero).
            r: ``(N,)`` float radii (unitless); None means ``r = 1``.

        Returns:
            ``(N, V, 3)`` float, mm.
        """
        check_tensor(u, "u", ("N", self.n_shape))
        u = u / u.norm(dim=1, keepdim=True).clamp_min(RADIUS_EPS)
        if r is not None:
            check_tensor(r, "r", (u.shape[0],))
            u = u * r[:, None]
        return self.decode_alpha(u)

    def decode_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        """``mean + B alpha`` for unconstrained ``alpha (N, K)`` -> ``(N, V, 3)`` mm."""
        check_tensor(alpha, "alpha", ("N", self.n_shape))
        return self.mean + (alpha.to(self.basis.dtype) @ self.basis.T).reshape(alpha.shape[0], -1, 3)

    def geometry_coefficients(self, alpha: torch.Tensor) -> torch.Tensor:
        """``R alpha`` with ``B = Q R`` (QR): coordinates in which distance is geometric distance.

        ``||R (alpha_i - alpha_j)|| = ||B (alpha_i - alpha_j)||``, the root-sum distance in mm
        over the 3V coordinates of the decoded shapes. So the SIR loss of SFM coefficients is
        ``sir_loss(sfm.geometry_coefficients(alpha), labels, torch.ones(K), n_verts=sfm.n_verts)``
        (:mod:`facelab.losses.sir`). Differentiable in ``alpha`` and ``basis``.

        Args:
            alpha: ``(N, K)`` float, SFM coefficients ``r u``.

        Returns:
            ``(N, K)`` float, mm.

        >>> sfm = SphereFaceModel(torch.zeros(2, 3), torch.eye(6)[:, :2] * torch.tensor([3.0, 1.0]))
        >>> sfm.geometry_coefficients(torch.tensor([[1.0, 1.0]])).abs().tolist()
        [[3.0, 1.0]]
        """
        check_tensor(alpha, "alpha", ("N", self.n_shape))
        _, r = torch.linalg.qr(self.basis)
        return alpha.to(r.dtype) @ r.T

    def forward(self, shapes: torch.Tensor) -> torch.Tensor:
        """Project ``shapes (N, V, 3)`` mm onto the model: ``decode(*encode(shapes))``."""
        return self.decode_alpha(self.coefficients(shapes))

    # ------------------------------------------------------------ MorphableModel export
    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``B = U diag(S) W^T``: ``U (3V, K)`` orthonormal, ``S (K,)`` mm descending, ``W (K, K)``.

        Signs are fixed (each column of ``U`` has its largest-magnitude entry positive) so that
        the export is reproducible.
        """
        with torch.no_grad():
            b = self.basis.detach().to(torch.float64)
            u, s, wt = torch.linalg.svd(b, full_matrices=False)
            sign = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
            sign[sign == 0] = 1.0
            # (u D) diag(s) (w D)^T = u diag(s) w^T for a diagonal D of signs
            return u * sign, s, wt.T * sign

    def to_morphable(self, base: MorphableModel) -> MorphableModel:
        """This SFM as a :class:`~facelab.morphable.MorphableModel` (expression, albedo, mesh from ``base``).

        With the SVD ``B = U diag(S) W^T`` (:meth:`svd`) the export stores

        * ``mean_shape = mean``; ``shape_basis = U`` (orthonormal, as the MorphableModel
          convention requires); ``shape_std = S`` (mm, descending);
        * ``meta["sfm"]["rotation"] = W`` (``K x K`` nested lists), plus ``name`` and this model's meta.

        So a MorphableModel's standardised coefficients ``a = alpha_id / shape_std`` are the SFM
        coefficients rotated: ``a = W^T alpha`` and ``alpha = W a``. A rotation keeps norms and
        angles, so ``||a|| = r``, cosines between ``a``'s equal those between ``u``'s, and
        ``shape(shape_std * a)`` is exactly :meth:`decode_alpha` of ``W a``; ``project_shape``
        gives the least-squares coefficients. Unlike a PCA model, ``a`` is not ``N(0, I)``.
        :meth:`from_morphable` inverts this (float32 storage: about 1e-6 relative).

        Args:
            base: a model with the same number of vertices.

        >>> from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
        >>> base = build_synthfaces(SynthFacesConfig(resolution="quick", n_population=20, n_shape=10,
        ...                                          n_albedo=4, n_expression_samples=200), use_cache=False)
        >>> m = SphereFaceModel.from_morphable(base).to_morphable(base)
        >>> m.n_shape, sorted(m.meta["sfm"])
        (10, ['name', 'rotation', 'sfm_meta'])
        """
        if not isinstance(base, MorphableModel):
            raise TypeError(f"base: expected a MorphableModel, got {type(base).__name__}")
        if base.n_verts != self.n_verts:
            raise ValueError(f"base: has {base.n_verts} vertices, the SFM has {self.n_verts}")
        u, s, w = self.svd()
        dt = base.dtype
        meta = {**base.meta, SFM_META_KEY: {"rotation": w.tolist(), "name": self.name, "sfm_meta": _jsonable(self.meta)}}
        return dataclasses.replace(
            base,
            mean_shape=self.mean.detach().to(dt).clone(),
            shape_basis=u.to(dt).contiguous(),
            shape_std=s.to(dt).contiguous(),
            name=self.name,
            meta=meta,
        )

    @classmethod
    def from_morphable(cls, morphable: MorphableModel, n_shape: int | None = None) -> "SphereFaceModel":
        """The SFM of a MorphableModel: ``B = shape_basis diag(shape_std) W^T``.

        ``W`` is ``meta["sfm"]["rotation"]`` when the model was written by :meth:`to_morphable`,
        else the identity: then ``B`` is the PCA basis scaled by its stds, the stage-1
        initialisation, and the SFM coefficients are the standardised PCA coefficients.

        Args:
            morphable: the model.
            n_shape: keep the first ``n_shape`` components (plain PCA models only; an exported
                SFM is restored whole).

        >>> from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
        >>> base = build_synthfaces(SynthFacesConfig(resolution="quick", n_population=20, n_shape=10,
        ...                                          n_albedo=4, n_expression_samples=200), use_cache=False)
        >>> SphereFaceModel.from_morphable(base, n_shape=6).basis.shape
        torch.Size([4059, 6])
        """
        if not isinstance(morphable, MorphableModel):
            raise TypeError(f"morphable: expected a MorphableModel, got {type(morphable).__name__}")
        info = morphable.meta.get(SFM_META_KEY)
        K = morphable.n_shape
        if info is not None:
            w = torch.as_tensor(info["rotation"], dtype=torch.float64)
            if w.shape != (K, K):
                raise ValueError(
                    f"morphable: meta['sfm']['rotation'] is {tuple(w.shape)}, expected ({K}, {K}) "
                    "(was the model truncated after export?)")
            if n_shape is not None and n_shape != K:
                raise ValueError(f"n_shape: an exported SFM is restored whole ({K} components), got {n_shape}")
            name, meta = info.get("name", morphable.name), info.get("sfm_meta", {})
        else:
            k = K if n_shape is None else n_shape
            if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= K:
                raise ValueError(f"n_shape: must be an int in [1, {K}], got {n_shape!r}")
            K, w = k, torch.eye(k, dtype=torch.float64)
            name, meta = f"sfm-init-{morphable.name}", {"init": "pca", "source": morphable.name}
        ub = morphable.shape_basis[:, :K].to(torch.float64)
        basis = (ub * morphable.shape_std[:K].to(torch.float64)) @ w.T
        return cls(morphable.mean_shape.clone(), basis.to(morphable.dtype), name=name, meta=meta)


def split_radius(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha (N, K)`` -> ``(u (N, K), r (N,))`` with ``alpha = r u``, ``||u|| = 1`` (``u = 0`` when ``r = 0``).

    >>> split_radius(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    (tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]]), tensor([5., 0.]))
    """
    check_tensor(alpha, "alpha", ("N", "K"))
    r = alpha.norm(dim=1)
    return alpha / r.clamp_min(RADIUS_EPS)[:, None], r


def _lstsq(basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` least-squares coefficients of rows of ``x (N, D)`` on columns of ``basis (D, K)``."""
    q, r = torch.linalg.qr(basis)
    if (r.diagonal().abs() <= torch.finfo(r.dtype).eps * r.diagonal().abs().max()).any():
        raise ValueError("basis: columns are linearly dependent (rank deficient)")
    return torch.linalg.solve_triangular(r, (x @ q).T, upper=True).T


def _jsonable(obj):
    import json

    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        return json.loads(json.dumps(obj, default=str))


# =================================================================== stage 1
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


def _adam_update(p: torch.Tensor, g: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, step: int, lr: float) -> None:
    """One in-place Adam step (Kingma and Ba, default betas).

    Written out because ``torch.optim`` imports ``torch._dynamo`` on first use, seconds of
    start-up that a full-batch fit of two small tensors does not need.
    """
    b1, b2 = _ADAM_BETAS
    m1.mul_(b1).add_(g, alpha=1 - b1)
    m2.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (m2 / (1 - b2**step)).sqrt_().add_(_ADAM_EPS)
    p.addcdiv_(m1, denom, value=-lr / (1 - b1**step))


@dataclass
class SFMConfig:
    """Stage-1 settings of :func:`fit_sfm_stage1` (facelab's choices).

    Attributes:
        loss: angular-margin head on ``u``, ``"cosface"`` or ``"arcface"``.
        scale: the head's scale ``s`` (logits are ``s`` times cosines).
        margin: the head's margin (cosine margin for CosFace, radians for ArcFace).
        rec_weight: weight of the reconstruction loss, which is the mean squared per-vertex
            error divided by its value for the PCA initialisation (1 at the start).
        n_steps: full-batch Adam steps.
        lr: Adam learning rate (the basis is trained in standardised units, see below).
        subspace_factor: stage 1 keeps ``B`` inside the training shapes' leading
            ``P = min(subspace_factor * K, rank)`` PCA directions (``B = U_P diag(sigma_P) E``,
            ``E (P, K)`` trained, starting at ``[I; 0]``); the residual outside is a constant of
            the reconstruction loss. 1 freezes the span (only the metric inside it is learnt).
        seed: seeds the head's initial directions.
    """

    loss: str = "cosface"
    scale: float = 16.0
    margin: float = 0.2
    rec_weight: float = 1.0
    n_steps: int = 300
    lr: float = 0.01
    subspace_factor: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.loss, "loss", SFM_LOSSES)
        check_positive(self.scale, "scale")
        check_positive(self.n_steps, "n_steps", integer=True)
        check_positive(self.lr, "lr")
        check_positive(self.subspace_factor, "subspace_factor", integer=True)
        if not self.margin >= 0:
            raise ValueError(f"margin: must be >= 0, got {self.margin}")
        if not self.rec_weight >= 0:
            raise ValueError(f"rec_weight: must be >= 0, got {self.rec_weight}")


def check_labelled_shapes(shapes, labels, shapes_name="shapes", labels_name="labels") -> None:
    """Check ``shapes (N, V, 3)`` (N >= 2) and integer ``labels (N,)``; errors name the arguments.

    >>> check_labelled_shapes(torch.zeros(2, 4, 3), torch.tensor([0, 1]))
    """
    check_tensor(shapes, shapes_name, ("N", "V", 3))
    check_tensor(labels, labels_name, (shapes.shape[0],), dtype_kind="int")
    if shapes.shape[0] < 2:
        raise ValueError(f"{shapes_name}: need at least 2 shapes, got {shapes.shape[0]}")


def _pca_fit(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean ``(D,)``, orthonormal basis ``(D, k)`` and std ``(k,)`` of ``x (N, D)`` (float64)."""
    from facelab.morphable.synthfaces import pca_basis  # QR first: much faster than a wide SVD

    return pca_basis(x, k)


def fit_pca(shapes: torch.Tensor, K: int) -> SphereFaceModel:
    """PCA of ``shapes (N, V, 3)`` mm as the stage-1 initialisation: ``B = U diag(sigma)``.

    Its coefficients are the standardised PCA coefficients ``a = alpha / sigma``.

    >>> fit_pca(torch.randn(6, 5, 3, dtype=torch.float64), 3).basis.shape
    torch.Size([15, 3])
    """
    check_tensor(shapes, "shapes", ("N", "V", 3))
    n, V = shapes.shape[0], shapes.shape[1]
    if not isinstance(K, int) or isinstance(K, bool) or not 0 < K <= min(n - 1, 3 * V):
        raise ValueError(f"K: must be an int in [1, min(N - 1, 3V)] = [1, {min(n - 1, 3 * V)}], got {K!r}")
    x = shapes.reshape(n, -1).to(torch.float64)
    mean, basis, std = _pca_fit(x, K)
    if not (std > 0).all():
        raise ValueError(f"shapes: only {int((std > 0).sum())} independent directions, K = {K} requested")
    return SphereFaceModel(mean.reshape(V, 3).to(shapes.dtype), (basis * std).to(shapes.dtype),
                           name=f"pca-{K}", meta={"init": "pca", "n_train": n})


def fit_sfm_stage1(shapes: torch.Tensor, labels: torch.Tensor, K: int, config: SFMConfig | None = None) -> SphereFaceModel:
    """Stage 1 of the Sphere Face Model: learn ``B`` from 3D shapes with identity labels.

    Loss (facelab's definition) = ``head(u, labels) + rec_weight * rec / rec_pca``, where

    * ``alpha`` = least-squares coefficients of each centred shape on ``B``; ``u = alpha / ||alpha||``;
    * ``head`` = CosFace/ArcFace cross-entropy of ``u`` against one learnable direction per
      identity (initialised at the identity's mean direction), which separates identities by
      an angular margin;
    * ``rec`` = mean over shapes and vertices of ``||mean + B (r u) - shape||^2`` (mm^2),
      ``rec_pca`` its value for the PCA initialisation.

    ``B`` starts at the training shapes' PCA basis times its stds and stays within their
    leading ``P = subspace_factor * K`` PCA directions (see :class:`SFMConfig`). The mean stays
    the training mean. Runs in float64 on ``shapes``' device, full batch.

    Args:
        shapes: ``(N, V, 3)`` float, mm, in correspondence (same frame).
        labels: ``(N,)`` int, identity labels (any integers).
        K: number of basis vectors.
        config: :class:`SFMConfig`.

    Returns:
        a :class:`SphereFaceModel` (float32 when ``shapes`` is float32) whose ``meta`` holds the
        config and the final loss terms.

    >>> g = torch.Generator().manual_seed(0)
    >>> centres = 10.0 * torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    >>> shapes = centres.repeat(3, 1, 1) + 0.5 * torch.randn(12, 6, 3, generator=g, dtype=torch.float64)
    >>> sfm = fit_sfm_stage1(shapes, torch.arange(4).repeat(3), K=3, config=SFMConfig(n_steps=20))
    >>> sfm.basis.shape, sfm.encode(shapes)[0].norm(dim=1).allclose(torch.ones(12, dtype=torch.float64))
    (torch.Size([18, 3]), True)
    """
    cfg = config or SFMConfig()
    if not isinstance(cfg, SFMConfig):
        raise TypeError(f"config: expected an SFMConfig, got {type(cfg).__name__}")
    check_labelled_shapes(shapes, labels)
    n, V = shapes.shape[0], shapes.shape[1]
    if not isinstance(K, int) or isinstance(K, bool) or not 0 < K <= min(n - 1, 3 * V):
        raise ValueError(f"K: must be an int in [1, min(N - 1, 3V)] = [1, {min(n - 1, 3 * V)}], got {K!r}")
    uniq, y = torch.unique(labels, return_inverse=True)
    if uniq.shape[0] < 2:
        raise ValueError("labels: need at least 2 identities for the angular-margin loss")

    from facelab.losses.angular import arcface_logits, cosface_logits

    x = shapes.reshape(n, -1).to(torch.float64)
    P = min(cfg.subspace_factor * K, n - 1, 3 * V)
    mean, basis_p, std_p = _pca_fit(x, P)
    keep = std_p > std_p[0] * 1e-9  # drop numerically empty directions
    basis_p, std_p = basis_p[:, keep], std_p[keep]
    P = basis_p.shape[1]
    if P < K:
        raise ValueError(f"shapes: only {P} independent directions, K = {K} requested")
    c = (x - mean) @ basis_p  # (N, P) mm: PCA coordinates
    resid_out = ((x - mean) - c @ basis_p.T).pow(2).sum() / (n * V)  # mm^2, constant
    e = torch.zeros(P, K, dtype=torch.float64, device=x.device)
    e[:K, :K] = torch.eye(K, dtype=torch.float64)
    e = nn.Parameter(e)

    def encode_rec(e_mat):
        b = std_p[:, None] * e_mat  # (P, K) mm per unit coefficient
        alpha = _lstsq(b, c)
        rec = (c - alpha @ b.T).pow(2).sum() / (n * V) + resid_out
        return alpha, rec

    with torch.no_grad():
        alpha0, rec_pca = encode_rec(e)
        u0, _ = split_radius(alpha0)
        w0 = torch.zeros(uniq.shape[0], K, dtype=torch.float64, device=x.device).index_add(0, y, u0)
        # a tiny seeded jitter keeps identities whose mean direction is ~0 apart
        gen = torch.Generator().manual_seed(cfg.seed)
        w0 = w0 + 1e-3 * torch.randn(w0.shape, generator=gen, dtype=torch.float64).to(x.device)
    weight = nn.Parameter(w0)
    head = cosface_logits if cfg.loss == "cosface" else arcface_logits
    rec_scale = 1.0 / float(rec_pca.clamp_min(1e-12))
    params = [e, weight]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    for step in range(1, cfg.n_steps + 1):
        alpha, rec = encode_rec(e)
        u, _ = split_radius(alpha)
        cls = nn.functional.cross_entropy(head(u, weight, y, s=cfg.scale, m=cfg.margin), y)
        loss = cls + cfg.rec_weight * rec_scale * rec
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, (m1, m2) in zip(params, grads, moments):
                _adam_update(p, g, m1, m2, step, cfg.lr)
    with torch.no_grad():
        alpha, rec = encode_rec(e)
        u, _ = split_radius(alpha)
        cls = nn.functional.cross_entropy(head(u, weight, y, s=cfg.scale, m=cfg.margin), y)
        basis = basis_p @ (std_p[:, None] * e.detach())  # (3V, K) mm
    meta = {
        "stage": 1, "config": dataclasses.asdict(cfg), "n_train": n, "n_identities": int(uniq.shape[0]),
        "subspace_dim": P, "final_head_loss": float(cls), "final_rec_rmse_mm": float(rec.sqrt()),
        "pca_rec_rmse_mm": float(rec_pca.sqrt()),
    }
    return SphereFaceModel(mean.reshape(V, 3).to(shapes.dtype), basis.to(shapes.dtype), name=f"sfm-{K}", meta=meta)


# =================================================================== SFM vs PCA
def noisy_identity_shapes(
    world,
    ids: torch.Tensor,
    n_copies: int,
    expression_scale: float = 1.0,
    noise_mm: float = 0.3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Several perturbed copies of each SynthFaces identity's true neutral shape.

    Copy = true shape + ``expression_scale`` x a random expression
    (:meth:`~facelab.morphable.synthfaces.FaceWorld.sample_expression`, the world's neutral
    share) + i.i.d. Gaussian noise of ``noise_mm`` per coordinate (a stand-in for fitting noise).

    Args:
        world: a :class:`~facelab.morphable.synthfaces.FaceWorld`.
        ids: ``(I,)`` long identity ids; n_copies: copies per identity.

    Returns:
        ``(shapes (I * n_copies, V, 3) float64 mm, labels (I * n_copies,) long)``, identity-major.

    >>> from facelab.morphable.synthfaces import SynthFacesConfig, load_world
    >>> s, y = noisy_identity_shapes(load_world(SynthFacesConfig(resolution="quick")), torch.arange(2), 3)
    >>> s.shape, y.tolist()
    (torch.Size([6, 1353, 3]), [0, 0, 0, 1, 1, 1])
    """
    check_tensor(ids, "ids", ("I",), dtype_kind="int")
    check_positive(n_copies, "n_copies", integer=True)
    if not expression_scale >= 0 or not noise_mm >= 0:
        raise ValueError(f"expression_scale, noise_mm: must be >= 0, got {expression_scale}, {noise_mm}")
    gen = torch.Generator().manual_seed(seed)
    true = world.identity(ids)["shape"].to(torch.float64)
    labels = ids.repeat_interleave(n_copies)
    shapes = true.repeat_interleave(n_copies, dim=0)
    n = shapes.shape[0]
    expr = world.expression(world.sample_expression(n, gen).to(torch.float64))
    noise = torch.randn(shapes.shape, generator=gen, dtype=torch.float64)
    return shapes + expression_scale * expr + noise_mm * noise, labels
