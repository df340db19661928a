"""Expression transfer: self-transfer is the reconstruction; the shape takes A's identity and B's expression."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from facelab.apps import expression_transfer
from facelab.models.gao2020 import Gao2020Config, Gao2020Model
from facelab.morphable import SynthFacesConfig, build_synthfaces


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Gao2020Model(Gao2020Config(image_size=(32, 32)), build_synthfaces(SynthFacesConfig(resolution="quick"))).eval()
    with torch.no_grad():  # a fresh decoder outputs zeros; perturb so codes matter
        for p in model.shape_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.pose_head.weight.normal_(0, 0.01)
    return model


def test_self_transfer_is_the_reconstruction(net):
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = expression_transfer(net, img, img, composite=False)
    with torch.no_grad():
        rec = net(img)
        r = net.render(rec)
    assert_close(out["shape"], rec["shape"])
    assert_close(out["render"], r.image)
    assert_close(out["image"], r.mask * r.image)


def test_shape_is_a_identity_with_b_expression(net):
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    out = expression_transfer(net, a, b)
    with torch.no_grad():
        ca, cb = net.encode(a), net.encode(b)
        want = net.decode_shape(ca["c_id"], cb["c_exp"].expand(2, -1))
    assert_close(out["shape"], want)
    assert_close(out["pose"], net.pose(cb["c_pose"]).expand(2, -1))
    # outside the rendered face the composite is B's photo
    outside = out["mask"] == 0
    assert outside.any()
    assert_close(out["image"][outside.expand_as(out["image"])], b.expand(2, -1, -1, -1)[outside.expand_as(out["image"])])


def test_bad_inputs_raise(net):
    with pytest.raises(ValueError, match="img_a"):
        expression_transfer(net, torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="img_b: expected a batch of 1 or 3"):
        expression_transfer(net, torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32))


# ------------------------------------------------------------- blend + widgets
def test_blend_transfer_endpoints(net):
    from facelab.apps import blend_transfer

    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        ca, cb = net.encode(a), net.encode(b)
        rec_a = net(a)
    full = blend_transfer(net, ca, cb, 1.0)
    assert_close(full["shape"], expression_transfer(net, a, b)["shape"])
    assert_close(blend_transfer(net, ca, cb, 0.0, take_pose=False)["shape"], rec_a["shape"])
    assert_close(blend_transfer(net, ca, cb, 0.0, take_pose=False)["image"], net.render(rec_a).image)
    half = blend_transfer(net, ca, cb, 0.5)["shape"]
    assert not torch.allclose(half, full["shape"])
    with pytest.raises(ValueError, match="amount"):
        blend_transfer(net, ca, cb, 1.5)


def test_transfer_widget_redraws_and_checks_input(net):
    pytest.importorskip("ipywidgets")
    from facelab.apps import transfer_widget

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    box = transfer_widget(net, images, titles=["x", "y", "z"], size=32)
    first = box.image.value
    assert first[:4] == b"\x89PNG"
    box.controls["b"].value = 2
    assert box.image.value != first
    again = box.image.value
    box.controls["amount"].value = 0.0
    box.controls["take_pose"].value = False
    assert box.image.value != again
    with pytest.raises(ValueError, match="at least 2"):
        transfer_widget(net, images[:1])
    with pytest.raises(ValueError, match="titles"):
        transfer_widget(net, images, titles=["only one"])
    with pytest.raises(ValueError, match="images"):
        transfer_widget(net, torch.rand(3, 3, 16, 16))


def test_3dmm_and_camera_light_sliders_redraw():
    pytest.importorskip("ipywidgets")
    from facelab.viz import camera_light_sliders, coefficient_sliders

    mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    for box in (coefficient_sliders(mm, n_shape=2, n_exp=1, image_size=48), camera_light_sliders(mm, image_size=48)):
        first = box.image.value
        assert first[:4] == b"\x89PNG"
        sliders = [w for col in box.children[:1] for w in col.children]
        sliders[0].value = sliders[0].max
        assert box.image.value != first
    lit = camera_light_sliders(mm, image_size=48)
    before = lit.image.value
    lit.children[0].children[-1].value = 1.0  # ambient light
    assert lit.image.value != before
