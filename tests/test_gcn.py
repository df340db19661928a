"""Chebyshev graph convolutions and COMA-style mesh coders (facelab.models.gcn)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from facelab.models.gcn import ChebConv, GraphDecoder, GraphEncoder, chebyshev_basis, scaled_laplacian
from facelab.morphable.grid import MeshHierarchy, hierarchy_for

pytestmark = pytest.mark.usefixtures("one_thread")

PATH3 = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path graph 0 - 1 - 2


@pytest.fixture(scope="module")
def quick():
    return hierarchy_for("quick")


def _tiny_graph():
    """A 5-vertex graph: a square 0-1-2-3 with a diagonal and a pendant vertex 4."""
    und = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (2, 4)]
    a = torch.tensor(und).T
    return torch.cat([a, a.flip(0)], 1), 5


# ------------------------------------------------------------ scaled Laplacian
def test_scaled_laplacian_path_graph_by_hand():
    L = scaled_laplacian(PATH3, 3).to_dense()
    s = 1 / math.sqrt(2)  # degrees 1, 2, 1: weight -1/sqrt(1*2)
    expected = torch.tensor([[0, -s, 0], [-s, 0, -s], [0, -s, 0]])
    torch.testing.assert_close(L, expected)


@pytest.mark.parametrize("level", [0, 1, 3])
def test_scaled_laplacian_symmetric_spectrum_in_unit_interval(quick, level):
    lvl = quick.levels[level]
    L = scaled_laplacian(lvl.edge_index, lvl.n_verts)
    assert L.is_sparse and L.shape == (lvl.n_verts, lvl.n_verts)
    dense = L.to_dense().double().numpy()
    np.testing.assert_array_equal(dense, dense.T)
    eig = np.linalg.eigvalsh(dense)
    assert eig.min() >= -1 - 1e-6 and eig.max() <= 1 + 1e-6
    # -D^-1/2 A D^-1/2 of a connected graph has eigenvalue -1 (eigenvector D^1/2 1)
    assert abs(eig.min() + 1) < 1e-5


def test_scaled_laplacian_isolated_vertex_and_duplicates():
    edges = torch.cat([PATH3, PATH3], 1)  # duplicates count once
    L = scaled_laplacian(edges, 4).to_dense()
    torch.testing.assert_close(L[:3, :3], scaled_laplacian(PATH3, 3).to_dense())
    assert torch.equal(L[3], torch.zeros(4)) and torch.equal(L[:, 3], torch.zeros(4))


@pytest.mark.parametrize("edges, n, match", [
    (torch.tensor([[0, 1], [1, 0]]), 1, "vertex ids"),
    (torch.tensor([[0, 1, 1], [1, 0, 1]]), 2, "self loops"),
    (torch.tensor([[0], [1]]), 2, "undirected"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 2, "integer"),
])
def test_scaled_laplacian_bad_input(edges, n, match):
    with pytest.raises((ValueError, TypeError), match=match):
        scaled_laplacian(edges, n)


# ------------------------------------------------------------ ChebConv
def test_chebconv_k1_is_a_per_vertex_linear(quick):
    torch.manual_seed(0)
    L = scaled_laplacian(quick.levels[1].edge_index, quick.levels[1].n_verts)
    conv = ChebConv(5, 7, K=1, laplacian=L)
    with torch.no_grad():
        conv.bias.normal_()
    lin = nn.Linear(5, 7)
    with torch.no_grad():
        lin.weight.copy_(conv.weight[0].T)
        lin.bias.copy_(conv.bias)
    x = torch.randn(3, L.shape[0], 5)
    torch.testing.assert_close(conv(x), lin(x))


def _unit_conv(cin, cout, K):
    """ChebConv on the 3-vertex path with W_k[0, 0] = 1 for every k and all else 0."""
    conv = ChebConv(cin, cout, K, scaled_laplacian(PATH3, 3)).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 0] = 1.0
    return conv


def test_chebconv_k2_path_graph_by_hand():
    conv = _unit_conv(1, 1, K=2)
    with torch.no_grad():
        conv.bias.fill_(0.5)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.double).view(1, 3, 1)
    r2 = math.sqrt(2)
    # L~ x = -(1/sqrt 2) [x1, x0 + x2, x1] = [-sqrt2, -2 sqrt2, -sqrt2]; y = x + L~ x + b
    expected = torch.tensor([1 - r2, 2 - 2 * r2, 3 - r2], dtype=torch.double) + 0.5
    torch.testing.assert_close(conv(x)[0, :, 0], expected)


@pytest.mark.parametrize("cin, cout", [(2, 1), (1, 2)])  # Clenshaw (C_out < C_in) and direct order
def test_chebconv_k3_path_graph_by_hand(cin, cout):
    conv = _unit_conv(cin, cout, K=3)
    x = torch.zeros(1, 3, cin, dtype=torch.double)
    x[0, :, 0] = torch.tensor([1.0, 2.0, 3.0])
    r2 = math.sqrt(2)
    # T_2 x = 2 L~(L~ x) - x = 2 [2, 2, 2] - [1, 2, 3] = [3, 2, 1]
    expected = torch.tensor([1 - r2 + 3, 2 - 2 * r2 + 2, 3 - r2 + 1], dtype=torch.double)
    y = conv(x)
    torch.testing.assert_close(y[0, :, 0], expected)
    if cout > 1:
        assert torch.equal(y[0, :, 1], torch.zeros(3, dtype=torch.double))


@pytest.mark.parametrize("cin, cout, K", [(6, 3, 5), (3, 6, 5), (4, 4, 2)])
def test_chebconv_matches_dense_polynomial(cin, cout, K):
    torch.manual_seed(1)
    edges, n = _tiny_graph()
    L = scaled_laplacian(edges, n)
    conv = ChebConv(cin, cout, K, L).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, n, cin, dtype=torch.double)
    Ld = L.to_dense().double()
    T = [torch.eye(n, dtype=torch.double), Ld]
    while len(T) < K:
        T.append(2 * Ld @ T[-1] - T[-2])
    expected = sum(T[k] @ x @ conv.weight[k] for k in range(K)) + conv.bias
    torch.testing.assert_close(conv(x), expected)


def test_chebyshev_basis_recurrence():
    edges, n = _tiny_graph()
    L = scaled_laplacian(edges, n).double()
    x = torch.randn(n, 2, dtype=torch.double)
    terms = chebyshev_basis(x, L, 4)
    Ld = L.to_dense()
    torch.testing.assert_close(terms[3], (4 * Ld @ Ld @ Ld - 3 * Ld) @ x)  # T_3(t) = 4t^3 - 3t


@pytest.mark.parametrize("cin, cout", [(3, 2), (2, 3)])
def test_chebconv_gradcheck(cin, cout):
    torch.manual_seed(2)
    edges, n = _tiny_graph()
    conv = ChebConv(cin, cout, 3, scaled_laplacian(edges, n)).double()
    x = torch.randn(2, n, cin, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _with_params(conv, w, b)(x), (x, conv.weight, conv.bias))
    # WGAN-div differentiates the critic's input gradient: second order must hold too
    assert torch.autograd.gradgradcheck(conv, (x,))


def _with_params(conv, w, b):
    def f(x):
        return torch.func.functional_call(conv, {"weight": w, "bias": b}, (x,))
    return f


def test_chebconv_bad_input(quick):
    L = scaled_laplacian(quick.levels[2].edge_index, quick.levels[2].n_verts)
    conv = ChebConv(4, 8, 3, L)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 99, 4\)"):
        conv(torch.zeros(2, 98, 4))  # wrong V
    with pytest.raises(ValueError, match=r"x: expected shape"):
        conv(torch.zeros(2, 99, 5))  # wrong channels
    with pytest.raises(ValueError, match="K: expected an int >= 1"):
        ChebConv(4, 8, 0, L)
    with pytest.raises(ValueError, match="laplacian"):
        ChebConv(4, 8, 2, L.to_dense())


def test_chebconv_follows_dtype_and_state_dict_has_no_laplacian(quick):
    L = scaled_laplacian(quick.levels[3].edge_index, quick.levels[3].n_verts)
    conv = ChebConv(2, 3, 2, L)
    assert set(conv.state_dict()) == {"weight", "bias"}
    assert conv.double()(torch.zeros(1, 30, 2, dtype=torch.double)).dtype == torch.double


# ------------------------------------------------------------ decoder / encoder
def test_graph_decoder_shape_zero_start_and_one_step(quick, device):
    torch.manual_seed(0)
    dec = GraphDecoder(12, quick, channels=(16, 8, 8, 4), K=3).to(device)
    code = torch.randn(4, 12, device=device)
    out = dec(code)
    assert out.shape == (4, 1353, 3)
    assert torch.equal(out, torch.zeros_like(out))  # fresh decoder: exactly 0
    opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
    (out - 1.0).square().mean().backward()
    opt.step()
    after = dec(code)
    assert after.abs().max() > 0 and torch.isfinite(after).all()


def test_graph_decoder_default_widths(quick):
    dec = GraphDecoder(192, quick)
    assert [c.out_channels for c in dec.convs] == [128, 64, 32, 16] and dec.head.out_channels == 3
    assert [c.n_verts for c in dec.convs] == [30, 99, 357, 1353]
    assert dec(torch.zeros(2, 192)).shape == (2, 1353, 3)


def test_graph_encoder_shape_and_input_gradient(quick):
    torch.manual_seed(0)
    enc = GraphEncoder(3, quick, channels=(4, 8, 8, 16), K=3, out_dim=2)
    x = torch.randn(5, 1353, 3, requires_grad=True)
    y = enc(x)
    assert y.shape == (5, 2)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    g.square().sum().backward()  # a gradient penalty is differentiable
    # every parameter but the output bias (which drops out of d score / d x) is reached
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == ["fc.bias"]


def test_coders_bad_input(quick):
    with pytest.raises(ValueError, match=r"channels: expected n_levels \+ 1 = 4"):
        GraphDecoder(8, quick, channels=(8, 8))
    with pytest.raises(ValueError, match=r"channels: expected n_levels \+ 1 = 4"):
        GraphEncoder(3, quick, channels=(8, 8, 8, 8, 8))
    with pytest.raises(TypeError, match="hierarchy"):
        GraphDecoder(8, "quick")
    with pytest.raises(ValueError, match="n_levels >= 1"):
        GraphDecoder(8, MeshHierarchy(5, 5, 0), channels=(4,))
    dec = GraphDecoder(8, MeshHierarchy(9, 9, 1), channels=(4, 4), K=2)
    with pytest.raises(ValueError, match=r"code: expected shape \(B, 8\)"):
        dec(torch.zeros(2, 7))
