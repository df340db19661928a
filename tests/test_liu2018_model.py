"""Liu et al. 2018 encoder-decoder (facelab.models.liu2018)."""

import dataclasses
import json

import pytest
import torch

from facelab.losses.angular import ASoftmaxLoss, SoftmaxLoss
from facelab.models.liu2018 import BasisDecoder, IdentityDecoder, Liu2018Config, Liu2018Model, ResidualDecoder
from facelab.models.sphereface import SphereConfig
from facelab.morphable import SynthFacesConfig, build_synthfaces

TINY_64 = SphereConfig("sphere_tiny", embedding_dim=32, input_size=(64, 64))


@pytest.fixture(scope="module")
def morphable():
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


def _model(morphable, **kw):
    torch.manual_seed(0)
    return Liu2018Model(morphable, Liu2018Config(TINY_64, **kw))


# ------------------------------------------------------------------ decoders
def test_decoders_reproduce_the_3dmm(morphable, device, dtype):
    mm = morphable.to(device, dtype)
    model = _model(morphable).to(device, dtype)
    coeffs = mm.sample(4, generator=torch.Generator().manual_seed(0))
    alpha, alpha_exp = coeffs["alpha_id"], coeffs["alpha_exp"]
    expected = mm.shape(alpha, alpha_exp)
    decoded = mm.mean_shape + model.id_decoder(alpha / mm.shape_std) + model.res_decoder(alpha_exp / mm.exp_std)
    assert (decoded - expected).abs().max().item() < 1e-4  # mm
    c_id, c_res = model.code_targets(alpha, alpha_exp)
    out = model.decode(c_id, c_res)
    assert (out["shape"] - expected).abs().max().item() < 1e-4
    assert (out["shape_id"] - mm.shape(alpha)).abs().max().item() < 1e-4
    assert torch.allclose(out["delta_res"], mm.expression_offset(alpha_exp), atol=1e-4)


def test_decoder_weights_are_scaled_bases(morphable):
    dec = IdentityDecoder(morphable)
    assert torch.equal(dec.linear.weight, morphable.shape_basis * morphable.shape_std)
    assert torch.equal(dec.linear.bias, torch.zeros(3 * morphable.n_verts))
    dec = ResidualDecoder(morphable)
    assert torch.equal(dec.linear.weight, morphable.exp_basis * morphable.exp_std)


def test_decoder_truncation_and_padding(morphable):
    alpha = morphable.sample(2, generator=torch.Generator().manual_seed(1))["alpha_id"][:, :10]
    short = IdentityDecoder(morphable, n_code=10)
    expected = morphable.truncate(n_shape=10).identity_offset(alpha)
    assert torch.allclose(short(alpha / morphable.shape_std[:10]), expected, atol=1e-4)
    wide = IdentityDecoder(morphable, n_code=morphable.n_shape + 5)
    assert torch.equal(wide.linear.weight[:, morphable.n_shape:], torch.zeros(3 * morphable.n_verts, 5))


def test_basis_decoder_hand_example():
    # two vertices; basis columns e_x(v0), e_y(v0); std (2, 1): code (1, 3) -> v0 = (2, 3, 0)
    dec = BasisDecoder(torch.eye(6, 2), torch.tensor([2.0, 1.0]))
    out = dec(torch.tensor([[1.0, 3.0]]))
    assert torch.equal(out, torch.tensor([[[2.0, 3.0, 0.0], [0.0, 0.0, 0.0]]]))


def test_decode_gradcheck(morphable):
    model = _model(morphable, n_id=4, n_res=3).double()
    c_id = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c_res = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    # a few vertices: the full (2, V, 3) Jacobian takes one backward pass per output
    assert torch.autograd.gradcheck(lambda a, b: model.decode(a, b)["shape"][:, :8], (c_id, c_res))


# ------------------------------------------------------------------ full model
@pytest.mark.parametrize("size", [(64, 64), (112, 96)])
def test_forward_shapes(morphable, size, device, dtype):
    torch.manual_seed(0)
    enc = dataclasses.replace(TINY_64, input_size=size)
    model = Liu2018Model(morphable, Liu2018Config(enc, n_id=12, n_res=7)).to(device, dtype)
    images = torch.rand(2, 3, *size, device=device, dtype=dtype)
    out = model(images)
    V = morphable.n_verts
    assert out["c_id"].shape == (2, 12) and out["c_res"].shape == (2, 7)
    for key in ("shape", "shape_id", "delta_id", "delta_res"):
        assert out[key].shape == (2, V, 3) and out[key].dtype == dtype
    assert torch.allclose(out["shape"], model.mean_shape + out["delta_id"] + out["delta_res"], atol=1e-4)
    assert torch.allclose(model.identity_features(images), out["c_id"])


def test_default_code_sizes_follow_the_morphable_model(morphable):
    model = _model(morphable)
    assert (model.n_id, model.n_res) == (morphable.n_shape, morphable.n_exp)
    assert model.classifier is None


def test_classification_heads(morphable):
    images, labels = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])
    a = _model(morphable, n_classes=3, margin_m=2)
    assert isinstance(a.classifier, ASoftmaxLoss) and a.classifier.m == 2
    s = _model(morphable, n_classes=3, loss="softmax")
    assert isinstance(s.classifier, SoftmaxLoss)
    for model in (a, s):
        c_id = model(images)["c_id"]
        loss = model.classification_loss(c_id, labels)
        assert loss.shape == () and loss.item() > 0
    with pytest.raises(ValueError, match="n_classes"):
        _model(morphable).classification_loss(torch.zeros(4, morphable.n_shape), labels)


def test_joint_loss_reaches_every_trained_parameter(morphable):
    """L = lambda_R L_R + L_C back-propagates into encoder, heads, decoders and classifier."""
    model = _model(morphable, n_classes=3)
    images, labels = torch.rand(3, 3, 64, 64), torch.tensor([0, 1, 2])
    target = model.mean_shape + torch.randn(3, morphable.n_verts, 3)
    out = model(images)
    loss = ((out["shape"] - target) ** 2).mean() + model.classification_loss(out["c_id"], labels)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_config_round_trips_through_json_and_overrides():
    from facelab.config import apply_overrides, from_dict, to_dict

    cfg = Liu2018Config(TINY_64, n_id=20, n_classes=7)
    assert from_dict(Liu2018Config, json.loads(json.dumps(to_dict(cfg)))) == cfg
    changed = apply_overrides(cfg, ["loss=softmax", "n_res=4"])
    assert (changed.loss, changed.n_res, changed.encoder) == ("softmax", 4, TINY_64)


def test_bad_inputs_raise(morphable):
    model = _model(morphable, n_id=5, n_res=4)
    with pytest.raises(ValueError, match="images"):
        model(torch.zeros(1, 3, 112, 96))
    with pytest.raises(ValueError, match="c_id"):
        model.decode(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="c_res"):
        model.decode(torch.zeros(2, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="alpha_id"):
        model.code_targets(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="loss: unknown value 'arcface'"):
        Liu2018Config(loss="arcface")
    with pytest.raises(ValueError, match="n_id"):
        Liu2018Config(n_id=0)
    with pytest.raises(ValueError, match="n_classes"):
        Liu2018Config(n_classes=-1)
    with pytest.raises(TypeError, match="morphable"):
        Liu2018Model("bfm.npz")
    with pytest.raises(TypeError, match="encoder"):
        Liu2018Config(encoder="sphere20")
    with pytest.raises(ValueError, match="basis"):
        BasisDecoder(torch.zeros(5, 2), torch.ones(2))
