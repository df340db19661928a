"""facelab.numerics: the batch-invariant primitives.

Checklist per primitive: smoke on (device, dtype); bad input names the argument; shapes;
value against an independent reference (numpy/scipy in float64); gradcheck; and the
property the module exists for: an element's value does not depend on the size of the
tensor it sits in, nor on its position there (SIMD body vs scalar tail).
"""

import numpy as np
import pytest
import scipy.special
import torch

from facelab.numerics import ordered_matmul, power, rowwise_matmul, sigmoid, softplus

# Sizes and offsets that put an element in the SIMD body, the scalar tail, or alone.
SIZES = (1, 7, 9, 13, 17, 31, 33, 63, 1353)
OFFSETS = (0, 5, 100)

ELEMENTWISE = {
    "sigmoid": sigmoid,
    "softplus": lambda x: softplus(x, beta=0.2),
    "power_int6": lambda x: power(x, 6),
    "power_frac": lambda x: power(x.abs(), 1.3),
    "power_neg_frac": lambda x: power(x.abs() + 0.1, -1 / 2.4),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_smoke_device_dtype(name, device, dtype):
    x = torch.linspace(-4, 4, 11, device=device, dtype=dtype)
    out = ELEMENTWISE[name](x)
    assert out.shape == x.shape and out.dtype == dtype and out.device.type == device.type
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_value_independent_of_position_and_size(name, dt):
    x = (torch.randn(3000, generator=torch.Generator().manual_seed(0)) * 3).to(dt)
    f = ELEMENTWISE[name]
    full = f(x)
    for n in SIZES:
        for s in OFFSETS:
            assert torch.equal(f(x[s : s + n]), full[s : s + n]), (n, s)


def test_sigmoid_matches_scipy_and_saturates():
    x = torch.linspace(-120, 120, 2001, dtype=torch.float64)
    np.testing.assert_allclose(sigmoid(x).numpy(), scipy.special.expit(x.numpy()), rtol=1e-15, atol=0)
    x32 = torch.linspace(-80, 80, 2001)  # float32 stays normal down to exp(-87)
    np.testing.assert_allclose(sigmoid(x32).numpy(), scipy.special.expit(x32.double().numpy()), rtol=4e-7, atol=0)
    assert sigmoid(torch.tensor([-1e4, 1e4])).tolist() == [0.0, 1.0]


def test_softplus_matches_numpy_without_overflow():
    x = torch.linspace(-300, 300, 1201, dtype=torch.float64)
    for beta in (0.2, 1.0, 3.0):
        ref = np.logaddexp(0.0, beta * x.numpy()) / beta
        np.testing.assert_allclose(softplus(x, beta).numpy(), ref, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("p", [0, 1, 2, 3, 4, 6, 8, 11, -2, -3])
def test_power_integer_is_exact_product(p):
    x = torch.tensor([-2.5, -1.0, 0.5, 1.5, 3.0], dtype=torch.float64)
    np.testing.assert_array_equal(power(x, p).numpy(), np.power(x.numpy(), float(p)))


@pytest.mark.parametrize("p", [0.5, 1.3, 1.6, 2.4, -1 / 2.4])
def test_power_fractional_matches_numpy(p):
    x = torch.tensor([0.0, 1e-3, 0.25, 1.0, 7.5, 120.0], dtype=torch.float32)
    if p < 0:
        x = x[1:]
    ref = np.power(x.double().numpy(), p)
    np.testing.assert_allclose(power(x, p).double().numpy(), ref, rtol=2 ** -23, atol=0)


def test_power_fractional_rejects_negative_base():
    with pytest.raises(ValueError, match="x: a non-integer power"):
        power(torch.tensor([1.0, -0.5]), 1.5)


def test_matmul_helpers_reject_bad_shapes():
    with pytest.raises(ValueError, match="a, b: inner dimensions differ"):
        ordered_matmul(torch.zeros(2, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="a, b: need at least 2 dims"):
        ordered_matmul(torch.zeros(3), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="x, w: expected"):
        rowwise_matmul(torch.zeros(2, 3), torch.zeros(4, 5))


def test_ordered_matmul_matches_numpy_with_broadcast(device, dtype):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 6, 9, generator=g), torch.randn(4, 9, 3, generator=g)
    want = np.matmul(a.double().numpy(), b.double().numpy())
    got = ordered_matmul(a.to(device, dtype), b.to(device, dtype)).cpu().double().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    flat = ordered_matmul(a[:, 0], b[0])  # (N, K) @ (K, C)
    np.testing.assert_allclose(flat.double().numpy(), a[:, 0].double().numpy() @ b[0].double().numpy(), atol=1e-5)


def test_rowwise_matmul_matches_numpy(device, dtype):
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(21, 4059, generator=g), torch.randn(4059, 30, generator=g) / 60
    want = x.double().numpy() @ w.double().numpy()
    got = rowwise_matmul(x.to(device, dtype), w.to(device, dtype)).cpu().double().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 if dtype == torch.float32 else 1e-12)
    assert rowwise_matmul(torch.zeros(0, 5), torch.zeros(5, 2)).shape == (0, 2)


def test_matmul_rows_independent_of_batch():
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(13, 777, generator=g), torch.randn(777, 40, generator=g)
    k_short, basis = torch.randn(13, 30, generator=g), torch.randn(30, 4059, generator=g)
    full_long, full_short = rowwise_matmul(x, w), ordered_matmul(k_short, basis)
    order = torch.randperm(13, generator=g)
    for rows in (torch.arange(1), torch.arange(5, 8), order):
        assert torch.equal(rowwise_matmul(x[rows], w), full_long[rows])
        assert torch.equal(ordered_matmul(k_short[rows], basis), full_short[rows])


def test_gradcheck_all_primitives():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, dtype=torch.float64, generator=g, requires_grad=True)
    pos = (torch.rand(7, dtype=torch.float64, generator=g) + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(sigmoid, (x,))
    assert torch.autograd.gradcheck(lambda t: softplus(t, 0.2), (x,))
    assert torch.autograd.gradcheck(lambda t: power(t, 5), (x,))
    assert torch.autograd.gradcheck(lambda t: power(t, 2.4), (pos,))
    a = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(ordered_matmul, (a, b))
    assert torch.autograd.gradcheck(rowwise_matmul, (a, b))


def test_gradients_finite_at_extremes_and_right_at_zero():
    x = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], requires_grad=True)
    sigmoid(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[2], torch.tensor(0.25))  # s(0) (1 - s(0))
    x.grad = None
    softplus(x, beta=0.2).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[2], torch.tensor(0.5))  # sigmoid(0)
