"""SphereFace's residual CNN (Liu et al. 2017, "sphere20a"), written out by hand.

The network is four stages. Each stage is a 3x3 stride-2 convolution + PReLU that
halves the image and widens the channels, followed by residual units of two
3x3 convolutions + PReLU each, ``x + prelu(conv(prelu(conv(x))))``, without batch
normalisation. The last feature map is flattened into one fully connected layer,
the embedding (512-d in SphereFace). The flatten ties the network to one input
size, :attr:`SphereConfig.input_size`.

Presets (:data:`SPHERE_PRESETS`):

* ``"sphere20"``: widths 64-128-256-512 with 1, 2, 4 and 1 units per stage: 4 + 2*8 = 20
  convolutions, as in SphereFace's ``sphere20a`` at 112x96 (feature map 512x7x6). The
  trunk plus the 512-d FC has 22,670,656 parameters (:data:`SPHERE20_PARAMS`, worked
  out in :func:`count_sphere_params`).
* ``"sphere_tiny"``: widths 16-32-64-128, 1 unit per stage, for the CPU (64x64 or 112x96).

Images are ``(B, 3, H, W)`` float; the network does not normalise them.

Book chapter: ``book/05_encoder_decoder.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from facelab.checks import check_choice, check_positive, check_tensor

SPHERE_PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    "sphere20": {"widths": (64, 128, 256, 512), "units": (1, 2, 4, 1)},
    "sphere_tiny": {"widths": (16, 32, 64, 128), "units": (1, 1, 1, 1)},
}
SPHERE20_INPUT_SIZE = (112, 96)
SPHERE20_EMBEDDING_DIM = 512
# Parameters of sphere20a without its classifier (the A-Softmax weights), 112x96 input.
SPHERE20_PARAMS = 22_670_656
# SphereFace's Caffe prototxt: Gaussian(0, 0.01) for the residual convolutions (so each
# unit starts close to the identity), Xavier for the downsampling ones, zero biases.
RESIDUAL_INIT_STD = 0.01
DOWNSAMPLE_STRIDE = 2


@dataclass
class SphereConfig:
    """Shape of a :class:`SphereNet`.

    Attributes:
        depth: preset name, ``"sphere20"`` or ``"sphere_tiny"``.
        widths: channels per stage; None takes the preset's.
        units: residual units per stage; None takes the preset's.
        embedding_dim: length of the output embedding (the FC layer).
        input_size: ``(H, W)`` pixels of the input images.
        in_channels: image channels.

    >>> SphereConfig("sphere_tiny", input_size=(64, 64)).resolved_widths()
    (16, 32, 64, 128)
    """

    depth: str = "sphere20"
    widths: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None
    embedding_dim: int = SPHERE20_EMBEDDING_DIM
    input_size: tuple[int, int] = SPHERE20_INPUT_SIZE
    in_channels: int = 3

    def __post_init__(self) -> None:
        check_choice(self.depth, "depth", list(SPHERE_PRESETS))
        # JSON round trips and CLI overrides give lists
        self.input_size = tuple(self.input_size)
        for name in ("widths", "units"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        widths, units = self.resolved_widths(), self.resolved_units()
        if len(widths) != len(units) or not widths:
            raise ValueError(f"widths, units: need one entry per stage each, got {len(widths)} widths and {len(units)} units")
        for w in widths:
            check_positive(w, "widths", integer=True)
        for u in units:
            if not isinstance(u, int) or u < 0:
                raise ValueError(f"units: residual units per stage must be ints >= 0, got {units}")
        check_positive(self.embedding_dim, "embedding_dim", integer=True)
        check_positive(self.in_channels, "in_channels", integer=True)
        if len(self.input_size) != 2:
            raise ValueError(f"input_size: expected (H, W), got {self.input_size}")
        for s in self.input_size:
            check_positive(s, "input_size", integer=True)

    def resolved_widths(self) -> tuple[int, ...]:
        return tuple(self.widths) if self.widths is not None else SPHERE_PRESETS[self.depth]["widths"]

    def resolved_units(self) -> tuple[int, ...]:
        return tuple(self.units) if self.units is not None else SPHERE_PRESETS[self.depth]["units"]

    def feature_map_size(self) -> tuple[int, int]:
        """``(h, w)`` of the last feature map: each stride-2 conv (k=3, pad=1) takes ``n -> ceil(n/2)``."""
        h, w = self.input_size
        for _ in self.resolved_widths():
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w


class SphereResidualUnit(nn.Module):
    """``x + prelu(conv3x3(prelu(conv3x3(x))))``, channels and size unchanged.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.

    >>> SphereResidualUnit(8)(torch.zeros(2, 8, 5, 6)).shape
    torch.Size([2, 8, 5, 6])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = nn.PReLU(channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=RESIDUAL_INIT_STD)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act2(self.conv2(self.act1(self.conv1(x))))


class SphereStage(nn.Sequential):
    """A stride-2 3x3 conv + PReLU, then ``units`` :class:`SphereResidualUnit`.

    ``x: (B, in_channels, H, W)`` -> ``(B, out_channels, ceil(H/2), ceil(W/2))``.

    >>> SphereStage(3, 8, units=2)(torch.zeros(1, 3, 7, 6)).shape
    torch.Size([1, 8, 4, 3])
    """

    def __init__(self, in_channels: int, out_channels: int, units: int) -> None:
        down = nn.Conv2d(in_channels, out_channels, 3, stride=DOWNSAMPLE_STRIDE, padding=1)
        nn.init.xavier_uniform_(down.weight)
        nn.init.zeros_(down.bias)
        super().__init__(down, nn.PReLU(out_channels), *(SphereResidualUnit(out_channels) for _ in range(units)))


class SphereNet(nn.Module):
    """SphereFace's residual CNN: images -> embedding.

    ``images: (B, in_channels, H, W)`` float with ``(H, W) == config.input_size`` ->
    ``(B, embedding_dim)`` float (not normalised; A-Softmax uses its norm).

    >>> net = SphereNet(SphereConfig("sphere_tiny", embedding_dim=32, input_size=(64, 64)))
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 32])
    """

    def __init__(self, config: SphereConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else SphereConfig()
        if not isinstance(config, SphereConfig):
            raise TypeError(f"config: expected a SphereConfig, got {type(config).__name__}")
        widths, units = config.resolved_widths(), config.resolved_units()
        ins = (config.in_channels,) + widths[:-1]
        self.stages = nn.Sequential(*(SphereStage(i, o, u) for i, o, u in zip(ins, widths, units)))
        h, w = config.feature_map_size()
        self.fc = nn.Linear(widths[-1] * h * w, config.embedding_dim)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    @property
    def out_features(self) -> int:
        return self.config.embedding_dim

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, widths[-1], h, w)``: the last convolutional feature map."""
        H, W = self.config.input_size
        check_tensor(images, "images", ("B", self.config.in_channels, H, W))
        return self.stages(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feature_map(images).flatten(1))


def count_sphere_params(widths: Sequence[int], units: Sequence[int], feature_map: tuple[int, int],
                        embedding_dim: int, in_channels: int = 3) -> int:
    """Parameters of a :class:`SphereNet`, counted from the layer shapes (closed form).

    Per stage of width ``c`` after width ``c_in``: the downsampling conv
    ``9 c_in c + c`` and its PReLU ``c``; each residual unit two convs ``9 c^2 + c`` and
    two PReLUs ``c``. Then the FC ``c_last h w e + e``. For sphere20a at 112x96
    (7x6 map): convs 11,655,424 + PReLUs 4,672 + FC 11,010,560 = 22,670,656.

    >>> count_sphere_params((64, 128, 256, 512), (1, 2, 4, 1), (7, 6), 512)
    22670656
    """
    total, c_in = 0, in_channels
    for c, u in zip(widths, units):
        total += 9 * c_in * c + c + c
        total += u * 2 * (9 * c * c + c + c)
        c_in = c
    h, w = feature_map
    return total + c_in * h * w * embedding_dim + embedding_dim


def sphere20(embedding_dim: int = SPHERE20_EMBEDDING_DIM, input_size: tuple[int, int] = SPHERE20_INPUT_SIZE) -> SphereNet:
    """SphereFace's sphere20a (22.7M parameters at 112x96 with a 512-d embedding).

    >>> sum(p.numel() for p in sphere20().parameters()) == SPHERE20_PARAMS
    True
    """
    return SphereNet(SphereConfig("sphere20", embedding_dim=embedding_dim, input_size=input_size))


def sphere_tiny(embedding_dim: int = 128, input_size: tuple[int, int] = (64, 64)) -> SphereNet:
    """The CPU variant: widths 16-32-64-128, one residual unit per stage.

    >>> sphere_tiny()(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 128])
    """
    return SphereNet(SphereConfig("sphere_tiny", embedding_dim=embedding_dim, input_size=input_size))
