"""Gao et al. 2020 encoder-decoder (facelab.models.gao2020)."""

import json
import math

import pytest
import torch

from facelab.models.gao2020 import (
    GAO2020_PROFILES, PITCH_MAX, ROLL_MAX, SHIFT_RANGE, YAW_MAX, CNNAlbedoDecoder, Gao2020Config, Gao2020Model,
    ShapeDiscriminator, build_gao2020_model, gao2020_model_config,
)
from facelab.morphable import SynthFacesConfig, build_synthfaces
from facelab.render import DEFAULT_SH
from facelab.io.checkpoint import save_checkpoint
from facelab.models.registry import build_model, load_model

pytestmark = pytest.mark.usefixtures("one_thread")

# small and fast: the tests check wiring, not capacity
SMALL = dict(gcn_channels=(8, 8, 8, 4), cheb_k=2, cnn_channels=(8, 8, 8, 4), discriminator_channels=(4, 4, 8, 8))
CODE_KEYS = {"c_id": 128, "c_exp": 64, "c_pose": 6, "c_lgt": 27}


@pytest.fixture(scope="module")
def morphable():
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


def _model(morphable, seed=0, **kw):
    torch.manual_seed(seed)
    return Gao2020Model(Gao2020Config(**{**SMALL, **kw}), morphable)


def _perturb(module, std=0.05, seed=1):
    """Give every parameter random values (zero-initialised layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("albedo", ["gcn", "cnn"])
def test_forward_shapes(morphable, albedo):
    model = _model(morphable, albedo=albedo)
    out = model(torch.rand(3, 3, 64, 64))
    assert set(out) == {*CODE_KEYS, "shape", "albedo", "pose", "sh"}
    for key, dim in CODE_KEYS.items():
        assert out[key].shape == (3, dim), key
    assert out["shape"].shape == (3, 1353, 3) and out["albedo"].shape == (3, 1353, 3)
    assert out["pose"].shape == (3, 6) and out["sh"].shape == (3, 27)
    codes = model.encode(torch.rand(3, 3, 64, 64))
    assert [f.shape[1] for f in codes["features"]] == [16, 32, 64, 128]


def test_default_config_forward(morphable):
    torch.manual_seed(0)
    model = Gao2020Model(Gao2020Config(), morphable)
    assert [c.out_channels for c in model.shape_decoder.convs] == [128, 64, 32, 16]
    assert model.shape_decoder.K == 6
    assert model(torch.rand(2, 3, 64, 64))["shape"].shape == (2, 1353, 3)


def test_fresh_model_is_the_framed_mean_face(morphable):
    model = _model(morphable)
    out = model(torch.rand(2, 3, 64, 64))
    assert torch.equal(out["shape"], morphable.mean_shape.expand(2, -1, -1))
    assert torch.equal(out["albedo"], morphable.mean_albedo.clamp(0, 1).expand(2, -1, -1))
    assert torch.equal(out["sh"], DEFAULT_SH.expand(2, -1))
    assert torch.equal(out["pose"][:, :3], torch.zeros(2, 3))
    r = model.render(out)
    assert r.image.shape == (2, 3, 64, 64) and r.mask.shape == (2, 1, 64, 64)
    assert r.landmarks2d.shape == (2, 68, 2)
    # framed as the data frames faces: brow-to-chin spans FACE_FILL of the image height
    # (0.52 * 64 px) and the face centre sits in the image centre
    lm = r.landmarks2d[0]
    height_px = lm[8, 1] - lm[[19, 24], 1].mean()
    assert abs(height_px.item() - 0.52 * 64) < 1e-3
    assert abs(lm[:, 0].mean().item() - 32.0) < 1e-3
    assert 0.15 < r.mask.mean().item() < 0.7  # a face, not an empty or a full frame


def test_renders_the_configured_image_size(morphable):
    model = _model(morphable, image_size=(48, 40))
    r = model.render(model(torch.rand(1, 3, 48, 40)))
    assert r.image.shape == (1, 3, 48, 40)
    assert abs((r.landmarks2d[0, 8, 1] - r.landmarks2d[0, [19, 24], 1].mean()).item() - 0.52 * 40) < 1e-3


def test_pose_and_light_parametrisation(morphable):
    model = _model(morphable)
    zero = model.pose(torch.zeros(1, 6))[0]
    assert zero[:3].tolist() == [0.0, 0.0, 0.0]
    raw = torch.tensor([[0.3, -0.2, 0.1, 0.5, -1.0, math.log(2.0)]])
    pose = model.pose(raw)[0]
    torch.testing.assert_close(pose[:3], torch.tensor([PITCH_MAX * math.tanh(0.3), YAW_MAX * math.tanh(-0.2),
                                                       ROLL_MAX * math.tanh(0.1)]))
    torch.testing.assert_close(pose[3], zero[3] + 0.5 * SHIFT_RANGE * 64)
    torch.testing.assert_close(pose[4], zero[4] - 1.0 * SHIFT_RANGE * 64)
    torch.testing.assert_close(pose[5], 2 * zero[5])
    huge = model.pose(torch.full((1, 6), 50.0))[0]
    torch.testing.assert_close(huge[:3], torch.tensor([PITCH_MAX, YAW_MAX, ROLL_MAX]))  # tanh saturates
    c = torch.randn(2, 27)
    torch.testing.assert_close(model.light(c), DEFAULT_SH + c)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("albedo", ["gcn", "cnn"])
def test_photometric_gradients_reach_every_head(morphable, albedo):
    model = _model(morphable, albedo=albedo)
    images = torch.rand(4, 3, 64, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_and_grads():
        opt.zero_grad()
        r = model.render(model(images))
        loss = ((r.image - images).square().sum(1, keepdim=True) * r.mask).mean()
        loss.backward()
        return loss

    # the decoders' last layers start at zero, so c_id / c_exp get gradients after one step
    loss_and_grads()
    opt.step()
    loss_and_grads()
    albedo_dec = model.cnn_albedo if albedo == "cnn" else model.albedo_decoder
    for name, module in [("id_head", model.id_head), ("exp_head", model.exp_head), ("pose_head", model.pose_head),
                         ("light_head", model.light_head), ("encoder", model.encoder),
                         ("shape_decoder", model.shape_decoder), ("albedo", albedo_dec)]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum().item() for g in grads) > 0, name
    unused = model.albedo_decoder if albedo == "cnn" else model.cnn_albedo
    assert all(p.grad is None or not p.grad.any() for p in unused.parameters())


def test_cnn_albedo_map_is_the_vertex_grid(morphable):
    model = _model(morphable, albedo="cnn")
    rows, cols = morphable.grid_shape
    ramp = torch.arange(rows * cols, dtype=torch.float32).view(1, 1, rows, cols) / (rows * cols)
    model.cnn_albedo.forward = lambda c_id, features: ramp.expand(c_id.shape[0], 3, rows, cols)
    albedo = model.decode_albedo(torch.zeros(2, 128), features=[])
    v = torch.tensor([0, 5, cols + 3, rows * cols - 1])  # vertex i*cols + j is map pixel (i, j)
    expected = (morphable.mean_albedo[v] + (v.float() / (rows * cols))[:, None]).clamp(0, 1)
    torch.testing.assert_close(albedo[1, v], expected)


def test_cnn_albedo_needs_features(morphable):
    model = _model(morphable, albedo="cnn")
    with pytest.raises(ValueError, match="features"):
        model.decode_albedo(torch.zeros(1, 128))
    dec = CNNAlbedoDecoder(4, (2, 3), (9, 11), (4, 4))
    with pytest.raises(ValueError, match="features: expected the encoder's 2 feature maps"):
        dec(torch.zeros(1, 4), [torch.zeros(1, 2, 8, 8)])
    with pytest.raises(ValueError, match=r"features\[1\]"):
        dec(torch.zeros(1, 4), [torch.zeros(1, 2, 8, 8), torch.zeros(1, 5, 4, 4)])


def test_neutral_shape_is_decode_with_zero_expression(morphable):
    model = _model(morphable)
    _perturb(model.shape_decoder)
    c_id = torch.randn(3, 128)
    neutral = model.neutral_shape(c_id)
    torch.testing.assert_close(neutral, model.decode_shape(c_id, torch.zeros(3, 64)))
    assert not torch.allclose(neutral, model.decode_shape(c_id, torch.randn(3, 64)))
    assert (neutral - model.template).abs().max() > 0  # non-trivial after the perturbation


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("images", [torch.rand(2, 1, 64, 64), torch.rand(2, 3, 32, 32), torch.rand(3, 64, 64)])
def test_bad_images_raise(morphable, images):
    model = _model(morphable)
    with pytest.raises(ValueError, match=r"images: expected \(B, 3, 64, 64\).*config.image_size"):
        model(images)


def test_bad_config_and_inputs(morphable):
    with pytest.raises(ValueError, match="albedo"):
        Gao2020Config(albedo="vae")
    with pytest.raises(ValueError, match="gcn_channels: expected n_levels"):
        Gao2020Config(gcn_channels=(8, 8))
    with pytest.raises(ValueError, match="pose_dim"):
        Gao2020Config(pose_dim=7)
    with pytest.raises(ValueError, match="backbone"):
        Gao2020Config(backbone="vgg")
    with pytest.raises(ValueError, match="cnn_channels"):
        Gao2020Model(Gao2020Config(**{**SMALL, "cnn_channels": (8, 8)}), morphable)
    with pytest.raises(TypeError, match="morphable"):
        Gao2020Model(Gao2020Config(**SMALL), None)
    with pytest.raises(ValueError, match="morphable: its grid"):
        Gao2020Model(Gao2020Config(**SMALL, resolution="default", n_levels=3), morphable)
    model = _model(morphable)
    with pytest.raises(ValueError, match=r"c_exp: expected shape \(2, 64\)"):
        model.decode_shape(torch.zeros(2, 128), torch.zeros(2, 63))
    with pytest.raises(ValueError, match="out: missing"):
        model.render({"shape": torch.zeros(1, 1353, 3)})


# ------------------------------------------------------------------ config / checkpoints
def test_config_round_trip():
    for cfg in (Gao2020Config(), Gao2020Config(albedo="cnn", image_size=(48, 40)), Gao2020Config.for_profile("quick"),
                Gao2020Config.for_profile("full")):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert Gao2020Config.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        Gao2020Config.from_dict({"id_dimension": 3})
    assert set(GAO2020_PROFILES) == {"quick", "standard", "full"}
    # the standard profile trains the quick network longer (its checkpoints load with the quick architecture)
    assert Gao2020Config.for_profile("standard") == Gao2020Config.for_profile("quick")


def test_builder_rebuilds_an_identical_state_dict(morphable):
    cfg = Gao2020Config(**SMALL, albedo="cnn")
    model = _model(morphable, albedo="cnn")
    _perturb(model)
    mc = gao2020_model_config(cfg)
    assert json.loads(json.dumps(mc)) == mc
    rebuilt = build_gao2020_model(mc)
    assert rebuilt.config == cfg
    ref, new = model.state_dict(), rebuilt.state_dict()
    assert list(ref) == list(new)
    assert all(ref[k].shape == new[k].shape and ref[k].dtype == new[k].dtype for k in ref)
    for k in ("template", "mean_albedo", "faces", "landmarks", "symmetry", "face_mask", "edge_index"):
        assert torch.equal(ref[k], new[k]), k
    rebuilt.load_state_dict(ref)
    assert all(torch.equal(ref[k], v) for k, v in rebuilt.state_dict().items())
    assert isinstance(build_model("gao2020", mc), Gao2020Model)


def test_checkpoint_round_trip(morphable, tmp_path):
    cfg = Gao2020Config(**SMALL)
    model = _model(morphable)
    _perturb(model)
    path = save_checkpoint(tmp_path / "g.pt", model_name="gao2020", model_config=gao2020_model_config(cfg),
                           state_dict=model.state_dict(), step=1)
    loaded, _ = load_model(path, expect_model="gao2020")
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    a, b = model(x), loaded(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


# ------------------------------------------------------------------ discriminator
def test_shape_discriminator(morphable):
    torch.manual_seed(0)
    d = ShapeDiscriminator(Gao2020Config(**SMALL), morphable)
    shapes = (morphable.mean_shape + torch.randn(4, 1353, 3)).requires_grad_()
    score = d(shapes)
    assert score.shape == (4,)
    (g,) = torch.autograd.grad(score.sum(), shapes, create_graph=True)
    assert g.shape == shapes.shape and g.abs().sum() > 0
    g.norm(dim=(1, 2)).pow(6).mean().backward()  # WGAN-div's penalty trains the critic
    assert d.encoder.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape: expected shape"):
        d(torch.zeros(2, 100, 3))
