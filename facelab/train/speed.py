"""Training speed options: channels-last convolutions, a bfloat16 encoder, a compiled encoder
and a fused optimiser.

All are off by default, so a recipe's results do not depend on the machine's vector units or
compiler; ``facelab bench train`` measures what each buys on the machine at hand.

* ``channels_last``: the encoder's weights (and so its activations) in NHWC order, the layout
  oneDNN's CPU convolutions run fastest in. The arithmetic is the same, the summation order
  is not, so results agree to float32 rounding, not bit for bit.
* ``encoder_precision="bfloat16"``: the encoder's forward (and so its backward) runs under
  :func:`torch.autocast` with bfloat16 and hands float32 features on. Convolutions then use
  the CPU's bfloat16 units (AMX or AVX512-BF16, where present: on such a CPU the
  ``sphere_tiny`` step measured 1.7x faster; without them it can be slower). Only the
  encoder: decoders produce millimetre coordinates, which need float32's 24-bit mantissa
  (bfloat16's 8 bits would round a 100 mm coordinate to 0.5 mm).
* ``compile_encoder``: the encoder's forward goes through :func:`torch.compile` (TorchInductor,
  which on the CPU writes C++ and needs a compiler such as gcc). It fuses each convolution's
  PReLU or ReLU and their backward into one pass over the activations, which matters most
  under bfloat16, where the convolutions themselves got faster. The first step pays for the
  compilation (about 20-40 s per input shape and grad mode); where compiling fails (no C++
  compiler, an unsupported platform) :func:`compile_available` says why once and training runs
  eagerly.
* ``fused_optimizer``: Adam/AdamW update every parameter in one fused kernel
  (``fused=True``) instead of one Python-level loop step per tensor: the same update, a few
  ms less per step for the Liu et al. and SIR models.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from facelab.checks import check_choice

ENCODER_PRECISIONS = ("float32", "bfloat16")
#: Recompilations allowed per compiled method (input shapes x grad modes) before a new
#: shape runs eagerly: training and the held-out evaluation need a few each.
COMPILE_CACHE_LIMIT = 16


def _to_float32(out):
    if torch.is_tensor(out):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    return out


def autocast_forward(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Make ``module``'s forward run under autocast at ``dtype`` and return float32 outputs, in place.

    The weights stay float32 (the optimiser updates them at full precision); the state dict
    is unchanged, so checkpoints load anywhere.

    >>> net = autocast_forward(nn.Conv2d(3, 4, 3))
    >>> net(torch.rand(1, 3, 8, 8)).dtype, net.weight.dtype
    (torch.float32, torch.float32)
    """
    return autocast_method(module, "forward", dtype)


def autocast_method(module: nn.Module, method: str, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """:func:`autocast_forward` for any method of ``module`` (e.g. a ResNet's ``feature_maps``)."""
    original = getattr(module, method)

    def run(*args, **kwargs):
        device = next(module.parameters()).device.type
        with torch.autocast(device_type=device, dtype=dtype):
            return _to_float32(original(*args, **kwargs))

    setattr(module, method, run)
    return module


@functools.cache
def compile_available() -> bool:
    """Whether :func:`torch.compile` works here: compiles a small function, forward and backward, once.

    Warns (once) with the reason when it does not, so a run asked to compile goes on eagerly.
    """
    def probe(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu(x @ w).sum()

    try:
        w = torch.ones(3, 2, requires_grad=True)
        torch.compile(probe, dynamic=False)(torch.ones(4, 3), w).backward()
        return w.grad is not None
    except Exception as err:  # any failure of the toolchain means: train eagerly
        warnings.warn(f"compile_encoder: torch.compile does not work on this machine ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); the encoder runs eagerly", stacklevel=2)
        return False


def compile_method(module: nn.Module, method: str = "forward") -> bool:
    """Replace ``module.<method>`` by its :func:`torch.compile` version, in place; False where compiling does not work.

    The weights and the state dict are untouched: checkpoints load into eager models.
    Each new input shape or grad mode compiles again, up to :data:`COMPILE_CACHE_LIMIT`.
    """
    if not compile_available():
        return False
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILE_CACHE_LIMIT)
    # compile in this process: a pool of compiler workers would compete with training for the cores
    torch._inductor.config.compile_threads = 1
    setattr(module, method, torch.compile(getattr(module, method), dynamic=False))
    return True


def speed_up_encoder(encoder: nn.Module, channels_last: bool = False, precision: str = "float32",
                     compile: bool = False, method: str = "forward") -> nn.Module:
    """Apply the training speed options to a convolutional ``encoder``, in place (module docstring).

    ``method`` is what the model calls: ``"forward"``, or e.g. ``"feature_maps"`` for a
    ResNet whose stage outputs feed skip connections. bfloat16 and compilation apply to it.

    >>> enc = speed_up_encoder(nn.Conv2d(3, 4, 3), channels_last=True, precision="bfloat16")
    >>> enc.weight.is_contiguous(memory_format=torch.channels_last), enc(torch.rand(2, 3, 8, 8)).dtype
    (True, torch.float32)
    >>> speed_up_encoder(nn.Conv2d(3, 4, 3), precision="half")
    Traceback (most recent call last):
    ...
    ValueError: precision: unknown value 'half'; expected one of 'float32', 'bfloat16'
    """
    check_choice(precision, "precision", ENCODER_PRECISIONS)
    if not callable(getattr(encoder, method, None)):
        raise ValueError(f"method: {type(encoder).__name__} has no method {method!r}")
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    if precision == "bfloat16":
        autocast_method(encoder, method, torch.bfloat16)
    if compile:
        compile_method(encoder, method)
    return encoder


def optimizer_options(fused: bool = False) -> dict:
    """Keyword arguments of ``torch.optim.Adam``/``AdamW`` for the ``fused_optimizer`` option.

    >>> optimizer_options(True), optimizer_options(False)
    ({'fused': True}, {})
    """
    return {"fused": True} if fused else {}
