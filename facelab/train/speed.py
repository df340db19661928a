"""Training speed options: channels-last convolutions and a bfloat16 encoder.

Both are off by default, so a recipe's results do not depend on the machine's vector units;
``facelab bench train`` measures what each buys on the machine at hand.

* ``channels_last``: the encoder's weights (and so its activations) in NHWC order, the layout
  oneDNN's CPU convolutions run fastest in. The arithmetic is the same, the summation order
  is not, so results agree to float32 rounding, not bit for bit.
* ``encoder_precision="bfloat16"``: the encoder's forward (and so its backward) runs under
  :func:`torch.autocast` with bfloat16 and hands float32 features on. Convolutions then use
  the CPU's bfloat16 units (AMX or AVX512-BF16, where present: on such a CPU the
  ``sphere_tiny`` step measured 1.7x faster; without them it can be slower). Only the
  encoder: decoders produce millimetre coordinates, which need float32's 24-bit mantissa
  (bfloat16's 8 bits would round a 100 mm coordinate to 0.5 mm).
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.checks import check_choice

ENCODER_PRECISIONS = ("float32", "bfloat16")


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
    original = module.forward

    def forward(*args, **kwargs):
        device = next(module.parameters()).device.type
        with torch.autocast(device_type=device, dtype=dtype):
            return _to_float32(original(*args, **kwargs))

    module.forward = forward
    return module


def speed_up_encoder(encoder: nn.Module, channels_last: bool = False, precision: str = "float32") -> nn.Module:
    """Apply the training speed options to a convolutional ``encoder``, in place (module docstring).

    >>> enc = speed_up_encoder(nn.Conv2d(3, 4, 3), channels_last=True, precision="bfloat16")
    >>> enc.weight.is_contiguous(memory_format=torch.channels_last), enc(torch.rand(2, 3, 8, 8)).dtype
    (True, torch.float32)
    >>> speed_up_encoder(nn.Conv2d(3, 4, 3), precision="half")
    Traceback (most recent call last):
    ...
    ValueError: precision: unknown value 'half'; expected one of 'float32', 'bfloat16'
    """
    check_choice(precision, "precision", ENCODER_PRECISIONS)
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    if precision == "bfloat16":
        autocast_forward(encoder, torch.bfloat16)
    return encoder
