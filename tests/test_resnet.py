"""facelab.models.resnet and facelab.models.regressor."""

import pytest
import torch

from facelab.models.regressor import CoefficientRegressor, RegressorConfig
from facelab.models.resnet import BasicBlock, Bottleneck, ResNet, build_backbone, resnet18, resnet50, resnet_tiny

# torchvision.models.resnet18/50 without the final fc layer (an independent reference:
# 11,689,512 - 513,000 and 25,557,032 - 2,049,000).
TORCHVISION_RESNET18_TRUNK = 11_176_512
TORCHVISION_RESNET50_TRUNK = 23_508_032


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_resnet_smoke(device, dtype):
    net = resnet_tiny().to(device, dtype)
    out = net(torch.rand(2, 3, 64, 64, device=device, dtype=dtype))
    assert out.shape == (2, net.out_features) and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(64, 64), (112, 96), (33, 47)])
def test_resnet_shapes_any_input_size(size):
    net = resnet_tiny().eval()
    assert net(torch.rand(3, 3, *size)).shape == (3, 128)
    maps = net.feature_maps(torch.rand(1, 3, *size))
    assert [m.shape[1] for m in maps] == [16, 32, 64, 128]
    # small stem: total stride 16
    assert maps[-1].shape[-2:] == tuple(-(-s // 16) for s in size)


def test_resnet_param_counts_match_torchvision():
    assert n_params(resnet18()) == TORCHVISION_RESNET18_TRUNK
    assert n_params(resnet50()) == TORCHVISION_RESNET50_TRUNK
    assert resnet18().out_features == 512 and resnet50().out_features == 2048


def test_resnet50_shape_112x96():
    net = resnet50().eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 112, 96)).shape == (1, 2048)


def test_blocks_are_residual():
    """With the residual branch zeroed (zero-init BN), a block is relu(shortcut(x))."""
    block = BasicBlock(4, 4).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(block(x), torch.relu(x))
    bott = Bottleneck(16, 4).eval()
    torch.nn.init.zeros_(bott.bn3.weight)
    x = torch.randn(2, 16, 5, 5)
    assert torch.allclose(bott(x), torch.relu(x))


def test_resnet_bad_input_raises():
    with pytest.raises(ValueError, match="stem"):
        ResNet(BasicBlock, (1,), (8,), stem="huge")
    with pytest.raises(ValueError, match="layers, widths"):
        ResNet(BasicBlock, (1, 1), (8,))
    with pytest.raises(TypeError, match="block"):
        ResNet(torch.nn.Linear, (1,), (8,))
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="images"):
        resnet_tiny()(torch.rand(2, 1, 32, 32))


def test_resnet_gradient_flows_to_every_parameter():
    torch.manual_seed(0)
    net = resnet_tiny()
    net(torch.rand(4, 3, 32, 32)).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_resnet_gradcheck_float64():
    torch.manual_seed(0)
    net = ResNet(BasicBlock, (1, 1), (2, 3), stem="small").double().eval()  # eval: BN is affine
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------ regressor
def test_regressor_untrained_predicts_mean_and_scales_by_std(device, dtype):
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    model = build_synthfaces(SynthFacesConfig(resolution="quick"))
    net = CoefficientRegressor(RegressorConfig(n_shape=10, n_exp=4, image_size=(32, 32)), morphable=model).to(device, dtype)
    assert torch.equal(net.shape_std.cpu(), model.shape_std[:10].to(dtype))
    morph = model.to(device, dtype)
    out = net.reconstruct(torch.rand(2, 3, 32, 32, device=device, dtype=dtype), morph)
    assert out["shape"].shape == (2, model.n_verts, 3) and out["embedding"].shape == (2, 10)
    assert out["landmarks2d"].shape == (2, 68, 2)
    assert torch.allclose(out["identity_shape"], morph.mean_shape.expand(2, -1, -1))
    # a non-zero head: alpha = a * std and shapes decode through the model's bases
    with torch.no_grad():
        net.head.bias.normal_()
    out = net(torch.rand(2, 3, 32, 32, device=device, dtype=dtype))
    assert torch.allclose(out["alpha_id"], out["a_id"] * net.shape_std)
    shapes = net.decode(out, morph.truncate(10, 4))
    expected = morph.truncate(10, 4).shape(out["alpha_id"], out["alpha_exp"])
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    assert torch.allclose(shapes["shape"], expected, atol=tol)


def test_regressor_target_standardisation_roundtrip():
    net = CoefficientRegressor(RegressorConfig(n_shape=3, n_exp=2, image_size=(16, 16)))
    net.shape_std.copy_(torch.tensor([4.0, 2.0, 1.0]))
    g = torch.Generator().manual_seed(0)
    poses = torch.randn(50, 6, generator=g) * torch.tensor([0.3, 1.0, 0.2, 5.0, 5.0, 0.02]) + torch.tensor([0, 0, 0, 8, 8, 0.1])
    net.set_target_statistics(poses, torch.randn(50, 27, generator=g))
    t = net.standardise_targets({"alpha_id": torch.tensor([[4.0, 2.0, 1.0, 9.0]]), "alpha_exp": torch.ones(1, 2), "pose": poses})
    assert torch.allclose(t["a_id"], torch.ones(1, 3))  # the 4th component is not predicted
    assert torch.allclose(t["pose_std"].mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(t["pose_std"].std(0), torch.ones(6), atol=1e-5)


def test_regressor_bad_input_raises():
    with pytest.raises(ValueError, match="backbone"):
        RegressorConfig(backbone="vgg")
    with pytest.raises(ValueError, match="image_size"):
        RegressorConfig(image_size=(4, 4))
    net = CoefficientRegressor(RegressorConfig(n_shape=5, n_exp=2, image_size=(32, 32)))
    with pytest.raises(ValueError, match="images"):
        net(torch.rand(1, 3, 64, 64))
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    small = build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_shape=3)
    with pytest.raises(ValueError, match="morphable"):
        net.reconstruct(torch.rand(1, 3, 32, 32), small)
