"""Spectral graph convolutions on meshes (ChebNet, Defferrard et al. 2016) and COMA-style coders.

A mesh is a graph: its vertices carry features ``x: (B, V, C)`` and its edges say who
is next to whom. A Chebyshev convolution of order ``K`` filters ``x`` with a polynomial
of the *scaled* graph Laplacian ``L~``::

    y = sum_{k=0}^{K-1} T_k(L~) x W_k + b,
    T_0 = I,  T_1 = L~,  T_k = 2 L~ T_{k-1} - T_{k-2},

so each output vertex sees its ``(K-1)``-ring neighbourhood, with ``K * C_in * C_out``
weights whatever the mesh size. ``L~ = 2 L / lambda_max - I`` with the normalised
Laplacian ``L = I - D^-1/2 A D^-1/2`` and ``lambda_max`` taken as 2 (as COMA and
PyTorch Geometric do), i.e. ``L~ = -D^-1/2 A D^-1/2``; its spectrum lies in
``[-1, 1]``, where the Chebyshev polynomials are bounded.

:class:`GraphDecoder` and :class:`GraphEncoder` stack these convolutions over the
exact grid hierarchy of :mod:`facelab.morphable.grid` (COMA, Ranjan et al. 2018, with
the extra first layer of Gao et al. 2020): the decoder starts from a fully connected
layer on the coarsest mesh and alternates convolution and up-sampling; the encoder
alternates convolution and down-sampling.

Book chapter: ``book/09_gao2020.ipynb``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from facelab.checks import check_positive, check_tensor
from facelab.morphable.grid import MeshHierarchy

__all__ = ["scaled_laplacian", "chebyshev_basis", "ChebConv", "GraphDecoder", "GraphEncoder"]

#: Default Chebyshev order of the coders (the paper's ``GC(6, w)``).
DEFAULT_CHEB_K = 6
#: Default decoder widths, coarsest level first (the paper uses 256, 128, 64, 32, 16).
DECODER_CHANNELS = (128, 64, 32, 16)
#: Default encoder widths, finest level first.
ENCODER_CHANNELS = (16, 32, 64, 128)


def scaled_laplacian(edge_index: torch.Tensor, n_verts: int) -> torch.Tensor:
    """The scaled Laplacian ``L~ = -D^-1/2 A D^-1/2`` of an undirected graph.

    Args:
        edge_index: ``(2, E)`` long, every edge in both directions (as
            :func:`facelab.morphable.grid.edges_from_faces` gives), no self loops.
        n_verts: V; vertices without edges get an all-zero row.

    Returns:
        ``(V, V)`` float32 sparse COO (coalesced), symmetric, eigenvalues in ``[-1, 1]``.

    >>> L = scaled_laplacian(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), 3)
    >>> L.to_dense()
    tensor([[ 0.0000, -0.7071,  0.0000],
            [-0.7071,  0.0000, -0.7071],
            [ 0.0000, -0.7071,  0.0000]])
    """
    check_positive(n_verts, "n_verts", integer=True)
    check_tensor(edge_index, "edge_index", (2, None), dtype_kind="int")
    edge_index = edge_index.long()
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n_verts):
        raise ValueError(f"edge_index: vertex ids must be in [0, {n_verts}), got [{int(edge_index.min())}, {int(edge_index.max())}]")
    if bool((edge_index[0] == edge_index[1]).any()):
        raise ValueError("edge_index: contains self loops; give the edges of the mesh only")
    # one weight per distinct edge, whatever the duplicates in the input
    key = torch.unique(edge_index[0] * n_verts + edge_index[1])
    row, col = key // n_verts, key % n_verts
    if not torch.equal(torch.unique(col * n_verts + row), key):
        raise ValueError("edge_index: the graph must be undirected (each edge given in both directions)")
    deg = torch.bincount(row, minlength=n_verts).double()
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1).rsqrt(), torch.zeros_like(deg))
    weight = -(inv_sqrt[row] * inv_sqrt[col])
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        return torch.sparse_coo_tensor(torch.stack([row, col]), weight.float(), (n_verts, n_verts)).coalesce()


class _SymmetricSparseMM(torch.autograd.Function):
    """``L @ x`` for a constant symmetric sparse ``L``: the backward is ``L @ grad``.

    torch's own backward of a sparse product transposes (and re-sorts) ``L`` every
    call, which costs several times the product itself on CPU.
    """

    @staticmethod
    def forward(ctx, laplacian: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.laplacian = laplacian
        return torch.sparse.mm(laplacian, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, _SymmetricSparseMM.apply(ctx.laplacian, grad)  # differentiable again (double backward)


def _lmul(laplacian: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``L~ @ x`` for ``x: (V, N)``."""
    return _SymmetricSparseMM.apply(laplacian, x)


def chebyshev_basis(x: torch.Tensor, laplacian: torch.Tensor, K: int) -> list[torch.Tensor]:
    """``[T_0(L~) x, ..., T_{K-1}(L~) x]`` by the three-term recurrence.

    Args:
        x: ``(V, N)`` float (any features, e.g. batch and channels flattened).
        laplacian: ``(V, V)`` sparse scaled Laplacian (:func:`scaled_laplacian`), symmetric.
        K: number of terms, >= 1.

    Returns:
        K tensors ``(V, N)``.

    >>> L = scaled_laplacian(torch.tensor([[0, 1], [1, 0]]), 2)
    >>> [t[:, 0].tolist() for t in chebyshev_basis(torch.tensor([[1.0], [0.0]]), L, 3)]
    [[1.0, 0.0], [0.0, -1.0], [1.0, 0.0]]
    """
    check_positive(K, "K", integer=True)
    terms = [x]
    if K > 1:
        terms.append(_lmul(laplacian, x))
    for _ in range(2, K):
        terms.append(2 * _lmul(laplacian, terms[-1]) - terms[-2])
    return terms


class ChebConv(nn.Module):
    """Chebyshev graph convolution ``y = sum_k T_k(L~) x W_k + b`` (ChebNet; COMA's layer).

    Args:
        in_channels, out_channels: feature sizes ``C_in``, ``C_out``.
        K: number of Chebyshev terms (``T_0 .. T_{K-1}``; K=1 is a per-vertex linear
            layer, K reaches the ``(K-1)``-ring).
        laplacian: ``(V, V)`` sparse scaled Laplacian of the mesh (:func:`scaled_laplacian`);
            kept as a non-persistent buffer (it follows ``.to()``, it is not saved).

    ``forward(x: (B, V, C_in) float) -> (B, V, C_out)``. Parameters: ``weight (K, C_in, C_out)``
    (Glorot-uniform), ``bias (C_out,)`` (zeros).

    When ``C_out < C_in`` the polynomial is evaluated on the *outputs* by Clenshaw's
    recurrence (``sum_k T_k(L~) (x W_k)``), so the ``K - 1`` sparse products run on the
    smaller width; both orders give the same result.

    >>> L = scaled_laplacian(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), 3)
    >>> ChebConv(4, 8, K=3, laplacian=L)(torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, laplacian: torch.Tensor) -> None:
        super().__init__()
        check_positive(in_channels, "in_channels", integer=True)
        check_positive(out_channels, "out_channels", integer=True)
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"K: expected an int >= 1 (number of Chebyshev terms), got {K!r}")
        if not isinstance(laplacian, torch.Tensor) or not laplacian.is_sparse or laplacian.dim() != 2 \
                or laplacian.shape[0] != laplacian.shape[1]:
            raise ValueError("laplacian: expected a square sparse COO tensor (V, V); build it with scaled_laplacian()")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.n_verts = laplacian.shape[0]
        self.register_buffer("laplacian", laplacian.coalesce(), persistent=False)
        self.weight = nn.Parameter(torch.empty(K, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot over one term's fan-in/out, as PyTorch Geometric's ChebConv
        bound = math.sqrt(6.0 / (self.in_channels + self.out_channels))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, K={self.K}, V={self.n_verts}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ("B", self.n_verts, self.in_channels))
        B, V, cin, cout, K = x.shape[0], self.n_verts, self.in_channels, self.out_channels, self.K
        L = self.laplacian if self.laplacian.dtype == x.dtype else self.laplacian.to(x.dtype)
        xt = x.transpose(0, 1)  # (V, B, C): the sparse products want vertices first
        if cout < cin and K > 1:
            # Clenshaw: y = sum_k T_k(L) z_k with z_k = x W_k, evaluated on C_out columns
            z = (xt.reshape(V * B, cin) @ self.weight.permute(1, 0, 2).reshape(cin, K * cout)).view(V, B, K, cout)
            # one copy to (K, V, B, C_out); unbind (not indexing) keeps the backward cheap
            zk = [t.view(V, B * cout) for t in z.permute(2, 0, 1, 3).contiguous().unbind(0)]
            b1, b2 = zk[K - 1], None  # b_{k+1}, b_{k+2}; b_K = 0 is never materialised
            for k in range(K - 2, 0, -1):
                b = zk[k] + 2 * _lmul(L, b1)
                b1, b2 = (b if b2 is None else b - b2), b1
            y = zk[0] + _lmul(L, b1)
            if b2 is not None:
                y = y - b2
            out = y.view(V, B, cout)
        else:
            terms = chebyshev_basis(xt.reshape(V, B * cin), L, K)
            stacked = torch.stack([t.view(V, B, cin) for t in terms], dim=2)  # (V, B, K, C_in)
            out = stacked.reshape(V, B, K * cin) @ self.weight.reshape(K * cin, cout)
        return (out + self.bias).transpose(0, 1)


def _check_hierarchy(hierarchy) -> None:
    if not isinstance(hierarchy, MeshHierarchy):
        raise TypeError(f"hierarchy: expected a MeshHierarchy, got {type(hierarchy).__name__}")
    if hierarchy.n_levels < 1:
        raise ValueError("hierarchy: needs at least one coarser level (n_levels >= 1)")


def _check_channels(channels: Sequence[int], hierarchy: MeshHierarchy, name: str) -> tuple[int, ...]:
    channels = tuple(channels)
    if len(channels) != hierarchy.n_levels + 1:
        raise ValueError(f"{name}: expected n_levels + 1 = {hierarchy.n_levels + 1} widths (one per mesh level), "
                         f"got {len(channels)}: {channels}")
    for c in channels:
        check_positive(c, name, integer=True)
    return channels


class GraphDecoder(nn.Module):
    """COMA-style mesh decoder: a code -> a per-vertex field on the full mesh.

    Architecture (``n = hierarchy.n_levels``, widths ``channels = (c_0, .., c_n)``)::

        FC(in_dim -> V_n * c_0) -> [ChebConv(K, c_i) + ELU -> up-sample one level]  for i = 0..n-1
                                -> ChebConv(K, c_n) + ELU -> ChebConv(K, out_channels)

    Up-sampling is the exact bilinear grid interpolation of
    :meth:`~facelab.morphable.grid.MeshHierarchy.upsample`. The last convolution starts
    at zero, so a fresh decoder outputs exactly 0 (the model adds a template).

    Args:
        in_dim: code length.
        hierarchy: the mesh hierarchy (:func:`facelab.morphable.mesh_hierarchy`).
        channels: widths, coarsest level first, ``n_levels + 1`` of them.
        K: Chebyshev order of every convolution.
        out_channels: output features per vertex (3 for a shape in mm or an RGB albedo).

    ``forward(code: (B, in_dim) float) -> (B, V_0, out_channels)``.

    >>> from facelab.morphable.grid import MeshHierarchy
    >>> dec = GraphDecoder(8, MeshHierarchy(9, 9, 2), channels=(8, 4, 4), K=2)
    >>> dec(torch.randn(2, 8)).abs().max().item()
    0.0
    """

    def __init__(self, in_dim: int, hierarchy: MeshHierarchy, channels: Sequence[int] = DECODER_CHANNELS,
                 K: int = DEFAULT_CHEB_K, out_channels: int = 3) -> None:
        super().__init__()
        check_positive(in_dim, "in_dim", integer=True)
        check_positive(out_channels, "out_channels", integer=True)
        _check_hierarchy(hierarchy)
        channels = _check_channels(channels, hierarchy, "channels")
        self.in_dim, self.channels, self.out_channels, self.K = in_dim, channels, out_channels, K
        self.hierarchy = hierarchy
        n = hierarchy.n_levels
        self.n_coarse = hierarchy.levels[n].n_verts
        laplacians = [scaled_laplacian(lvl.edge_index, lvl.n_verts) for lvl in hierarchy.levels]
        self.fc = nn.Linear(in_dim, self.n_coarse * channels[0])
        # convs[i] runs on level n - i; convs[n] and head on level 0
        self.convs = nn.ModuleList(
            ChebConv(channels[max(i - 1, 0)], channels[i], K, laplacians[n - i]) for i in range(n))
        self.convs.append(ChebConv(channels[n - 1], channels[n], K, laplacians[0]))
        self.head = ChebConv(channels[n], out_channels, K, laplacians[0])
        with torch.no_grad():
            self.head.weight.zero_()
        self.act = nn.ELU()

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        check_tensor(code, "code", ("B", self.in_dim))
        n = self.hierarchy.n_levels
        x = self.fc(code).view(code.shape[0], self.n_coarse, self.channels[0])
        for i in range(n):
            x = self.hierarchy.upsample(self.act(self.convs[i](x)), n - 1 - i)
        x = self.act(self.convs[n](x))
        return self.head(x)


class GraphEncoder(nn.Module):
    """COMA-style mesh encoder (e.g. a shape discriminator): a per-vertex field -> a vector.

    Architecture (``n = hierarchy.n_levels``, widths ``channels = (c_0, .., c_n)``)::

        [ChebConv(K, c_i) + ELU -> down-sample one level]  for i = 0..n-1
        -> ChebConv(K, c_n) + ELU -> flatten (V_n * c_n) -> FC(out_dim)

    Down-sampling keeps every other grid row and column
    (:meth:`~facelab.morphable.grid.MeshHierarchy.downsample`).

    Args:
        in_channels: input features per vertex.
        hierarchy: the mesh hierarchy.
        channels: widths, finest level first, ``n_levels + 1`` of them.
        K: Chebyshev order.
        out_dim: output length (1 for a critic score).

    ``forward(x: (B, V_0, in_channels) float) -> (B, out_dim)``.

    >>> from facelab.morphable.grid import MeshHierarchy
    >>> GraphEncoder(3, MeshHierarchy(9, 9, 2), channels=(4, 4, 8), K=2)(torch.randn(5, 81, 3)).shape
    torch.Size([5, 1])
    """

    def __init__(self, in_channels: int, hierarchy: MeshHierarchy, channels: Sequence[int] = ENCODER_CHANNELS,
                 K: int = DEFAULT_CHEB_K, out_dim: int = 1) -> None:
        super().__init__()
        check_positive(in_channels, "in_channels", integer=True)
        check_positive(out_dim, "out_dim", integer=True)
        _check_hierarchy(hierarchy)
        channels = _check_channels(channels, hierarchy, "channels")
        self.in_channels, self.channels, self.out_dim, self.K = in_channels, channels, out_dim, K
        self.hierarchy = hierarchy
        self.n_verts = hierarchy.levels[0].n_verts
        widths_in = (in_channels,) + channels[:-1]
        self.convs = nn.ModuleList(
            ChebConv(cin, cout, K, scaled_laplacian(lvl.edge_index, lvl.n_verts))
            for cin, cout, lvl in zip(widths_in, channels, hierarchy.levels))
        self.fc = nn.Linear(hierarchy.levels[-1].n_verts * channels[-1], out_dim)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ("B", self.n_verts, self.in_channels))
        n = self.hierarchy.n_levels
        for i in range(n):
            x = self.hierarchy.downsample(self.act(self.convs[i](x)), i)
        x = self.act(self.convs[n](x))
        return self.fc(x.reshape(x.shape[0], -1))
