"""A-Softmax, CosFace, ArcFace and softmax heads (facelab.losses.angular)."""

import math

import pytest
import torch
import torch.nn.functional as F

from facelab.losses.angular import (
    AnnealingSchedule, ArcFaceLoss, ASoftmaxLoss, CosFaceLoss, SoftmaxLoss,
    a_softmax_logits, arcface_logits, build_classifier_loss, cosface_logits, psi, softmax_logits,
)


def _unit(angle_rad: float, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([math.cos(angle_rad), math.sin(angle_rad)], dtype=dtype)


def _planar_case(dtype, device):
    """Feature of norm 2 at 0 rad; class weights at 60, 100 and 170 degrees (any norms)."""
    x = (2.0 * _unit(0.0)).unsqueeze(0).repeat(3, 1)
    angles = [math.radians(a) for a in (60.0, 100.0, 170.0)]
    w = torch.stack([s * _unit(a) for s, a in zip((1.0, 3.0, 0.5), angles)])
    labels = torch.tensor([0, 1, 2])
    return x.to(device, dtype), w.to(device, dtype), labels.to(device), angles


# ------------------------------------------------------------------ psi
def test_psi_hand_value_at_60_degrees():
    # k = floor(4 * 60 / 180) = 1: -cos(240 deg) - 2 = 0.5 - 2 = -1.5
    value = psi(torch.tensor([math.radians(60.0)], dtype=torch.float64), m=4)
    assert value.item() == pytest.approx(-1.5, abs=1e-12)


def test_psi_end_points_and_first_interval():
    theta = torch.linspace(0, math.pi / 4 - 1e-6, 50, dtype=torch.float64)
    assert torch.allclose(psi(theta, 4), torch.cos(4 * theta))
    ends = psi(torch.tensor([0.0, math.pi], dtype=torch.float64), 4)
    assert ends.tolist() == pytest.approx([1.0, 1.0 - 2 * 4])


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_monotone_decreasing_and_continuous(m):
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    values = psi(theta, m)
    assert (values[1:] - values[:-1] <= 1e-12).all()
    for k in range(1, m):
        b = k * math.pi / m
        left, right = psi(torch.tensor([b - 1e-9, b + 1e-9], dtype=torch.float64), m)
        assert abs(left.item() - right.item()) < 1e-6


def test_psi_with_m1_is_cosine():
    theta = torch.linspace(0, math.pi, 101, dtype=torch.float64)
    assert torch.allclose(psi(theta, 1), torch.cos(theta))


@pytest.mark.parametrize("m", [0, -1, 2.5, True])
def test_psi_bad_m_raises(m):
    with pytest.raises(ValueError, match="m:"):
        psi(torch.zeros(3), m)


# ------------------------------------------------------------------ A-Softmax logits
def test_a_softmax_logits_hand_computed(device, dtype):
    x, w, labels, angles = _planar_case(dtype, device)
    logits = a_softmax_logits(x, w, labels, m=4, lambda_=0.0)
    assert logits.shape == (3, 3)
    cos = torch.tensor([math.cos(a) for a in angles], dtype=torch.float64)
    expected = 2.0 * cos.repeat(3, 1)  # non-target: ||x|| cos theta
    for i, a in enumerate(angles):
        k = math.floor(4 * a / math.pi)
        expected[i, i] = 2.0 * ((-1) ** k * math.cos(4 * a) - 2 * k)
    assert expected[0, 0].item() == pytest.approx(-3.0)  # 2 * psi(60 deg)
    assert torch.allclose(logits.cpu().double(), expected, atol=1e-5)


def test_a_softmax_lambda_blends_cosine_and_psi(device, dtype):
    x, w, labels, _ = _planar_case(dtype, device)
    lam = 5.0
    logits = a_softmax_logits(x, w, labels, m=4, lambda_=lam)
    # target at 60 deg: 2 * (5 * 0.5 - 1.5) / 6 = 1/3
    assert logits[0, 0].item() == pytest.approx(1.0 / 3.0, abs=1e-5)
    # a huge lambda gives the margin-free normalised-weight logits ||x|| cos theta
    plain = 2.0 * F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
    assert torch.allclose(a_softmax_logits(x, w, labels, lambda_=1e9), plain, atol=1e-5)


def test_a_softmax_matches_psi_of_acos():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    w = torch.randn(7, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (64,), generator=g)
    for m in (1, 2, 3, 4):
        logits = a_softmax_logits(x, w, labels, m=m)
        theta = torch.acos((F.normalize(x, dim=1) * F.normalize(w[labels], dim=1)).sum(1))
        target = x.norm(dim=1) * psi(theta, m)
        assert torch.allclose(logits.gather(1, labels[:, None]).squeeze(1), target, atol=1e-9)


def test_a_softmax_margin_makes_target_smaller_than_plain():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(32, 6, generator=g), torch.randn(5, 6, generator=g)
    labels = torch.randint(0, 5, (32,), generator=g)
    plain = a_softmax_logits(x, w, labels, m=1)
    margin = a_softmax_logits(x, w, labels, m=4)
    target_plain, target_margin = plain.gather(1, labels[:, None]), margin.gather(1, labels[:, None])
    assert (target_margin <= target_plain + 1e-6).all() and (target_margin < target_plain - 1e-3).any()
    off = torch.ones_like(plain, dtype=torch.bool).scatter_(1, labels[:, None], False)
    assert torch.equal(plain[off], margin[off])


def test_a_softmax_gradcheck_away_from_breakpoints():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 4, 1])
    theta = torch.acos((F.normalize(x, dim=1) * F.normalize(w[labels], dim=1)).sum(1))
    distance = (theta * 4 / math.pi - torch.round(theta * 4 / math.pi)).abs()
    assert (distance > 1e-3).all()  # the check needs angles away from k pi / m
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: a_softmax_logits(a, b, labels, m=4, lambda_=2.0), (x, w))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": torch.tensor([0, 5])}, "labels"),
        ({"labels": torch.tensor([-1, 0])}, "labels"),
        ({"labels": torch.tensor([0.0, 1.0])}, "labels"),
        ({"labels": torch.tensor([0, 1, 2])}, "labels"),
        ({"weight": torch.randn(5, 4)}, "weight"),
        ({"features": torch.randn(2, 3, 1)}, "features"),
        ({"m": 0}, "m:"),
        ({"m": 2.0}, "m:"),
        ({"lambda_": -1.0}, "lambda_"),
    ],
)
def test_a_softmax_bad_inputs_raise(kwargs, match):
    args = {"features": torch.randn(2, 3), "weight": torch.randn(5, 3), "labels": torch.tensor([0, 4])} | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        a_softmax_logits(**args)


# ------------------------------------------------------------------ annealing
def test_annealing_schedule_values():
    s = AnnealingSchedule()
    assert s.lambda_at(0) == pytest.approx(1000.0)
    assert s.lambda_at(100) == pytest.approx(1000.0 / 13.0)
    assert s.lambda_at(10**5) == pytest.approx(5.0)  # 1000 / 12001 < lambda_min
    custom = AnnealingSchedule(base=10.0, gamma=1.0, power=2.0, lambda_min=0.0)
    assert custom.lambda_at(3) == pytest.approx(10.0 / 16.0)
    with pytest.raises(ValueError, match="iteration"):
        s.lambda_at(-1)
    with pytest.raises(ValueError, match="gamma"):
        AnnealingSchedule(gamma=-0.1)


def test_a_softmax_module_counter_and_loss(device, dtype):
    torch.manual_seed(0)
    head = ASoftmaxLoss(6, 4).to(device, dtype)
    x, labels = torch.randn(8, 6, device=device, dtype=dtype), torch.randint(0, 4, (8,), device=device)
    expected = F.cross_entropy(a_softmax_logits(x, head.weight, labels, m=4, lambda_=1000.0), labels)
    loss = head(x, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert int(head.iteration) == 1 and head.current_lambda == pytest.approx(1000.0 / 1.12)
    head.eval()
    head(x, labels)
    assert int(head.iteration) == 1  # eval mode does not advance the schedule
    assert "iteration" in head.state_dict()
    assert head.predict(x).shape == (8,)


# ------------------------------------------------------------------ CosFace / ArcFace / softmax
def test_cosface_closed_form(device, dtype):
    x, w, labels, angles = _planar_case(dtype, device)
    s, m = 16.0, 0.35
    logits = cosface_logits(x, w, labels, s=s, m=m)
    cos = torch.tensor([math.cos(a) for a in angles], dtype=torch.float64)
    expected = s * (cos.repeat(3, 1) - m * torch.eye(3, dtype=torch.float64))
    assert torch.allclose(logits.cpu().double(), expected, atol=1e-4)


def test_arcface_closed_form_and_fallback(device, dtype):
    x, w, labels, angles = _planar_case(dtype, device)
    s, m = 8.0, 0.3
    logits = arcface_logits(x, w, labels, s=s, m=m).cpu().double()
    # 60 and 100 deg: s cos(theta + m); 170 deg + 0.3 rad > pi: s (cos theta - m sin m)
    assert logits[0, 0].item() == pytest.approx(s * math.cos(angles[0] + m), abs=1e-4)
    assert logits[1, 1].item() == pytest.approx(s * math.cos(angles[1] + m), abs=1e-4)
    assert logits[2, 2].item() == pytest.approx(s * (math.cos(angles[2]) - m * math.sin(m)), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(s * math.cos(angles[1]), abs=1e-4)


def test_additive_margins_gradcheck():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 4, 1])
    assert torch.autograd.gradcheck(lambda a, b: cosface_logits(a, b, labels, s=4.0, m=0.2), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: arcface_logits(a, b, labels, s=4.0, m=0.2), (x, w))


def test_additive_margins_bad_inputs_raise():
    x, w, y = torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="s:"):
        cosface_logits(x, w, y, s=0.0)
    with pytest.raises(ValueError, match="m:"):
        cosface_logits(x, w, y, m=-0.1)
    with pytest.raises(ValueError, match="m:"):
        arcface_logits(x, w, y, m=2.0)
    with pytest.raises(ValueError, match="labels"):
        arcface_logits(x, w, torch.tensor([0, 4]))


def test_softmax_matches_linear_layer():
    torch.manual_seed(0)
    head = SoftmaxLoss(5, 3)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    linear = torch.nn.Linear(5, 3)
    linear.load_state_dict({"weight": head.weight.detach(), "bias": head.bias.detach()})
    assert torch.allclose(head(x, y), F.cross_entropy(linear(x), y))
    assert torch.allclose(softmax_logits(x, head.weight, head.bias), linear(x))
    with pytest.raises(ValueError, match="bias"):
        softmax_logits(x, head.weight, torch.zeros(4))


def test_build_classifier_loss():
    assert isinstance(build_classifier_loss("asoftmax", 8, 3, m=2), ASoftmaxLoss)
    assert isinstance(build_classifier_loss("arcface", 8, 3), ArcFaceLoss)
    with pytest.raises(ValueError, match="loss: unknown value 'focal'"):
        build_classifier_loss("focal", 8, 3)
    with pytest.raises(ValueError, match="m:"):
        ASoftmaxLoss(8, 3, m=0)
    with pytest.raises(ValueError, match="n_classes"):
        CosFaceLoss(8, 0)


# ------------------------------------------------------------------ training smoke
@pytest.mark.parametrize("head_cls", [ASoftmaxLoss, CosFaceLoss, ArcFaceLoss, SoftmaxLoss])
def test_training_separates_four_classes(head_cls):
    """50 Adam steps on 4 well-separated clusters reach 100 % training accuracy."""
    g = torch.Generator().manual_seed(0)
    dim, per_class = 8, 16
    centres = 4.0 * torch.randn(4, dim, generator=g)
    x = centres.repeat_interleave(per_class, 0) + 0.3 * torch.randn(4 * per_class, dim, generator=g)
    y = torch.arange(4).repeat_interleave(per_class)
    torch.manual_seed(0)
    embed = torch.nn.Linear(dim, dim)
    head = head_cls(dim, 4)
    opt = torch.optim.Adam([*embed.parameters(), *head.parameters()], lr=0.05)
    with torch.no_grad():
        start_loss = head(embed(x), y).item()
        assert (head.predict(embed(x)) == y).float().mean().item() < 0.5
    for _ in range(50):
        opt.zero_grad()
        loss = head(embed(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (head.predict(embed(x)) == y).float().mean().item()
        end_loss = head(embed(x), y).item()
    assert accuracy == 1.0
    assert end_loss < start_loss


def _angle_ratio_after_training(m: int) -> float:
    """Min over samples of (smallest angle to another class) / (angle to own class)."""
    g = torch.Generator().manual_seed(0)
    dim, per_class = 8, 16
    centres = 4.0 * torch.randn(4, dim, generator=g)
    x = centres.repeat_interleave(per_class, 0) + torch.randn(4 * per_class, dim, generator=g)
    y = torch.arange(4).repeat_interleave(per_class)
    torch.manual_seed(0)
    embed = torch.nn.Linear(dim, dim)
    head = ASoftmaxLoss(dim, 4, m=m, schedule=AnnealingSchedule(base=0.0, lambda_min=0.0))  # lambda = 0
    opt = torch.optim.Adam([*embed.parameters(), *head.parameters()], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        head(embed(x), y).backward()
        opt.step()
    with torch.no_grad():
        theta = torch.acos(head.scores(embed(x)).clamp(-1, 1))
    own = theta.gather(1, y[:, None]).squeeze(1)
    other = theta.masked_fill(F.one_hot(y, 4).bool(), math.inf).min(1).values
    return (other / own).min().item()


def test_a_softmax_enforces_the_angular_margin():
    """With lambda = 0, A-Softmax's decision rule is m theta_y < theta_j: the trained
    features end up m times closer (in angle) to their own class than to any other."""
    assert _angle_ratio_after_training(4) > 4.0
    assert _angle_ratio_after_training(1) < 4.0  # the plain normalised softmax does not
