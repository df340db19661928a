"""SphereFace encoder (facelab.models.sphereface)."""

import pytest
import torch
from torch import nn

from facelab.config import apply_overrides
from facelab.models.sphereface import (
    SPHERE20_PARAMS, SphereConfig, SphereNet, SphereResidualUnit, SphereStage, count_sphere_params, sphere20,
    sphere_tiny,
)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sphere20_matches_sphere20a_layer_by_layer():
    net = sphere20()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20  # 4 downsampling + 2 * (1 + 2 + 4 + 1) residual
    assert [c.out_channels for c in convs if c.stride == (2, 2)] == [64, 128, 256, 512]
    assert net.fc.in_features == 512 * 7 * 6 and net.fc.out_features == 512
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 20
    # 22,670,656, i.e. the "about 22.7M" of sphere20a with its 512-d FC at 112x96
    assert _n_params(net) == SPHERE20_PARAMS == 22_670_656
    assert _n_params(net) == count_sphere_params((64, 128, 256, 512), (1, 2, 4, 1), (7, 6), 512)


def test_sphere20_forward_shape_at_112x96():
    torch.manual_seed(0)
    out = sphere20()(torch.randn(1, 3, 112, 96))
    assert out.shape == (1, 512) and torch.isfinite(out).all()


@pytest.mark.parametrize("size, fmap", [((64, 64), (4, 4)), ((112, 96), (7, 6)), ((65, 33), (5, 3))])
def test_tiny_shapes_and_feature_map(size, fmap, device, dtype):
    torch.manual_seed(0)
    net = SphereNet(SphereConfig("sphere_tiny", embedding_dim=24, input_size=size)).to(device, dtype)
    assert net.config.feature_map_size() == fmap
    images = torch.randn(3, 3, *size, device=device, dtype=dtype)
    assert net.feature_map(images).shape == (3, 128, *fmap)
    out = net(images)
    assert out.shape == (3, 24) and out.dtype == dtype and torch.isfinite(out).all()
    expected = count_sphere_params((16, 32, 64, 128), (1, 1, 1, 1), fmap, 24)
    assert _n_params(net) == expected


def test_residual_unit_is_identity_with_zero_convs():
    unit = SphereResidualUnit(4)
    with torch.no_grad():
        for p in (unit.conv1.weight, unit.conv2.weight):
            p.zero_()
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(unit(x), x)


def test_residual_unit_matches_hand_composition():
    """x + prelu(conv(prelu(conv(x)))) written with the functional ops."""
    torch.manual_seed(1)
    unit = SphereResidualUnit(3)
    x = torch.randn(2, 3, 6, 5)
    f = nn.functional
    h = f.prelu(f.conv2d(x, unit.conv1.weight, unit.conv1.bias, padding=1), unit.act1.weight)
    h = f.prelu(f.conv2d(h, unit.conv2.weight, unit.conv2.bias, padding=1), unit.act2.weight)
    assert torch.allclose(unit(x), x + h, atol=1e-6)


def test_stage_halves_resolution():
    out = SphereStage(3, 8, units=0)(torch.zeros(1, 3, 9, 10))
    assert out.shape == (1, 8, 5, 5)


def test_sphere_net_gradcheck():
    torch.manual_seed(0)
    cfg = SphereConfig("sphere_tiny", widths=(2, 3), units=(1, 1), embedding_dim=3, input_size=(6, 5))
    net = SphereNet(cfg).double()
    images = torch.randn(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (images,))


def test_deterministic_from_seed():
    torch.manual_seed(5)
    a = sphere_tiny()
    torch.manual_seed(5)
    b = sphere_tiny()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_inputs_raise():
    net = sphere_tiny(embedding_dim=8, input_size=(64, 64))
    with pytest.raises(ValueError, match="images: expected shape"):
        net(torch.zeros(1, 3, 112, 96))
    with pytest.raises(ValueError, match="images"):
        net(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="depth: unknown value 'sphere64'"):
        SphereConfig("sphere64")
    with pytest.raises(ValueError, match="widths, units"):
        SphereConfig(widths=(8, 16), units=(1, 1, 1))
    with pytest.raises(ValueError, match="embedding_dim"):
        SphereConfig(embedding_dim=0)
    with pytest.raises(ValueError, match="input_size"):
        SphereConfig(input_size=(64,))
    with pytest.raises(TypeError, match="config"):
        SphereNet({"depth": "sphere20"})


def test_config_overrides():
    cfg = apply_overrides(SphereConfig(), ["depth=sphere_tiny", "embedding_dim=64"])
    assert cfg.resolved_widths() == (16, 32, 64, 128) and cfg.embedding_dim == 64
