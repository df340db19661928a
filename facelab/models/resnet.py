"""Residual CNN encoders (He et al. 2016), written out by hand: no torchvision or timm.

A :class:`ResNet` maps images ``(B, C, H, W)`` to feature vectors ``(B, out_features)``
by global average pooling, so any input size works (112x96 as in SphereFace, 64x64 on
CPU). Layer names and parameter shapes follow torchvision, so the trunks of
:func:`resnet18` / :func:`resnet50` have exactly torchvision's parameter counts (without
the classifier ``fc``).

Stems:

* ``"imagenet"``: 7x7 stride-2 convolution and 3x3 stride-2 max pool (torchvision's),
  total stride 32.
* ``"small"``: one 3x3 stride-2 convolution, no pool, total stride 16: for the small
  images of the CPU profile, where the ImageNet stem would throw most pixels away.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from facelab.checks import check_choice, check_positive, check_tensor

STEMS = ("small", "imagenet")
IMAGENET_WIDTHS = (64, 128, 256, 512)
TINY_WIDTHS = (16, 32, 64, 128)
BOTTLENECK_EXPANSION = 4


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut.

    ``x: (B, in_planes, H, W)`` -> ``(B, planes, ceil(H/stride), ceil(W/stride))``.

    >>> BasicBlock(8, 16, stride=2)(torch.zeros(1, 8, 10, 12)).shape
    torch.Size([1, 16, 5, 6])
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, "ResNet v1.5"), 1x1 expand by 4, plus the shortcut.

    ``x: (B, in_planes, H, W)`` -> ``(B, 4 * planes, ceil(H/stride), ceil(W/stride))``.

    >>> Bottleneck(16, 8, stride=2)(torch.zeros(1, 16, 9, 9)).shape
    torch.Size([1, 32, 5, 5])
    """

    expansion = BOTTLENECK_EXPANSION

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """A ResNet trunk with global average pooling: images -> feature vectors.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        widths: planes per stage (the output has ``widths[-1] * block.expansion`` channels).
        in_channels: image channels.
        stem: ``"small"`` or ``"imagenet"`` (see the module docstring).
        zero_init_residual: start each residual branch's last BN at 0, so every block
            starts as the identity (Goyal et al. 2017); helps short CPU runs.

    ``forward(images: (B, in_channels, H, W) float) -> (B, out_features) float``.

    >>> net = ResNet(BasicBlock, (1, 1), (8, 16))
    >>> net(torch.zeros(2, 3, 112, 96)).shape, net.out_features
    (torch.Size([2, 16]), 16)
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        in_channels: int = 3,
        stem: str = "small",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"block: expected BasicBlock or Bottleneck, got {block!r}")
        layers, widths = list(layers), list(widths)
        if not layers or len(layers) != len(widths):
            raise ValueError(f"layers, widths: need the same non-zero length, got {len(layers)} and {len(widths)}")
        for n in layers:
            check_positive(n, "layers", integer=True)
        for w in widths:
            check_positive(w, "widths", integer=True)
        check_positive(in_channels, "in_channels", integer=True)
        check_choice(stem, "stem", STEMS)
        self.in_channels = in_channels
        stem_width = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = _conv3x3(in_channels, stem_width, stride=2)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        planes_in = stem_width
        stages = []
        for k, (n, width) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(block(planes_in, width, stride=2 if (j == 0 and k > 0) else 1))
                planes_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        # torchvision's names (layer1..layer4) keep state-dict keys familiar
        self.stage_names = tuple(f"layer{k + 1}" for k in range(len(stages)))
        for name, stage in zip(self.stage_names, stages):
            self.add_module(name, stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = planes_in
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The output of each stage: a list of ``(B, C_k, H_k, W_k)`` tensors (for skip connections)."""
        check_tensor(images, "images", ("B", self.in_channels, None, None))
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        maps = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            maps.append(x)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_maps(images)[-1]).flatten(1)


def resnet_tiny(in_channels: int = 3, **kwargs) -> ResNet:
    """A CPU-sized ResNet: one basic block per stage, widths 16-32-64-128, small stem.

    >>> resnet_tiny()(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 128])
    """
    kwargs.setdefault("stem", "small")
    return ResNet(BasicBlock, (1, 1, 1, 1), TINY_WIDTHS, in_channels=in_channels, **kwargs)


def resnet18(in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2, widths 64..512), ImageNet stem; 512 features.

    >>> sum(p.numel() for p in resnet18().parameters())
    11176512
    """
    kwargs.setdefault("stem", "imagenet")
    return ResNet(BasicBlock, (2, 2, 2, 2), IMAGENET_WIDTHS, in_channels=in_channels, **kwargs)


def resnet50(in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3, widths 64..512 x 4), ImageNet stem; 2048 features.

    >>> resnet50().out_features
    2048
    """
    kwargs.setdefault("stem", "imagenet")
    return ResNet(Bottleneck, (3, 4, 6, 3), IMAGENET_WIDTHS, in_channels=in_channels, **kwargs)


BACKBONES = {"resnet_tiny": resnet_tiny, "resnet18": resnet18, "resnet50": resnet50}


def build_backbone(name: str, in_channels: int = 3, **kwargs) -> ResNet:
    """A backbone by name: ``"resnet_tiny"``, ``"resnet18"`` or ``"resnet50"``.

    >>> build_backbone("resnet_tiny").out_features
    128
    """
    check_choice(name, "backbone", list(BACKBONES))
    return BACKBONES[name](in_channels=in_channels, **kwargs)
