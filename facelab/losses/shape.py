"""Shape and albedo losses of Gao et al. 2020 (eqs. 7-10).

Book chapter: ``book/06_losses.ipynb``.

* :func:`shape_l1` (eq. 7): L1 to the ground-truth 3DMM shape of labelled images.
* :func:`pairwise_shape_loss` (eq. 8): decode A's identity code with B's expression code
  and compare with the 3DMM shape of A's identity and B's expression. It only reaches
  zero when the identity code carries no expression and vice versa. facelab adds a
  *neutral partner* (``[c_id_A, 0]`` vs A's neutral 3DMM shape), which fixes
  ``c_exp = 0`` as the neutral expression, the code used for "average over identity".
* :func:`template_smoothness` (eq. 9): the uniform Laplacian of the reconstruction
  should equal the template's, not zero. :func:`laplacian_smoothness` is the
  conventional version (Laplacian -> 0), which also flattens the nostrils, eye
  corners and lip line, where a face is *not* smooth: the point of eq. 9.
* :func:`albedo_symmetry` (eq. 10): ``A`` should equal its left/right mirror image.

Normalisation: the paper writes sums (``||.||_1``, ``sum_i``). facelab uses means so
that the weights do not change with the mesh resolution or batch size; each
function says exactly which mean.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from facelab.checks import check_tensor

# ------------------------------------------------------------------ validation


def _check_vertex_mask(vertex_mask: torch.Tensor | None, n_verts: int, like: torch.Tensor) -> torch.Tensor | None:
    """``(V,)`` bool/float mask -> ``(V,)`` weights in ``like``'s dtype (None stays None)."""
    if vertex_mask is None:
        return None
    check_tensor(vertex_mask, "vertex_mask", (n_verts,), dtype_kind=None)
    w = vertex_mask.to(device=like.device, dtype=like.dtype)
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError("vertex_mask: weights must be >= 0 and select at least one vertex")
    return w


def _check_edge_index(edge_index: torch.Tensor, n_verts: int) -> torch.Tensor:
    check_tensor(edge_index, "edge_index", (2, None), dtype_kind="int")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n_verts):
        raise ValueError(
            f"edge_index: vertex indices must lie in [0, {n_verts}), got [{int(edge_index.min())}, {int(edge_index.max())}]")
    return edge_index


def _vertex_mean(per_vertex: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over batch and vertices of ``per_vertex (B, V)`` (weighted over vertices)."""
    if weights is None:
        return per_vertex.mean()
    return (per_vertex * weights).sum() / (weights.sum() * per_vertex.shape[0])


# ------------------------------------------------------------------ eq. 7


def shape_l1(pred: torch.Tensor, target: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Shape loss ``L_shp = ||s_hat - s[:, T]||_1`` (Gao et al. 2020, eq. 7), as a mean.

    ``mean_{b, v in mask, xyz} |pred - target|``: the mean absolute coordinate error.

    Args:
        pred: ``(B, V, 3)`` float, mm, reconstructed shape (model frame, no pose).
        target: ``(B, V, 3)`` float, mm, ground-truth shape.
        vertex_mask: ``(V,)`` bool or float weights >= 0 (the template region ``T``,
            e.g. ``morphable.face_mask``), or None for every vertex.

    Returns:
        ``()`` scalar, mm.

    >>> shape_l1(torch.tensor([[[1.0, -2.0, 0.0], [0.0, 0.0, 3.0]]]), torch.zeros(1, 2, 3))
    tensor(1.)
    """
    check_tensor(pred, "pred", ("B", "V", 3))
    check_tensor(target, "target", tuple(pred.shape))
    w = _check_vertex_mask(vertex_mask, pred.shape[1], pred)
    return _vertex_mean((pred - target).abs().mean(dim=-1), w)


# ------------------------------------------------------------------ eq. 8


def swap_partners(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Default expression partner of each sample for :func:`pairwise_shape_loss`.

    Sample ``i`` takes the expression of sample ``(i + 1) % n`` (a roll by one), so
    every sample is both an A and a B, and no sample is its own partner when ``n > 1``.

    Returns:
        ``(n,)`` long.

    >>> swap_partners(4).tolist()
    [1, 2, 3, 0]
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    return torch.roll(torch.arange(n, device=device), -1)


def _linear_shape(morphable, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
    """``morphable.shape`` in the morphable's dtype (targets carry no gradient)."""
    dtype = getattr(morphable, "dtype", alpha_id.dtype)
    device = getattr(morphable, "device", alpha_id.device)
    with torch.no_grad():
        return morphable.shape(alpha_id.detach().to(device, dtype), alpha_exp.detach().to(device, dtype))


def pairwise_shape_loss(
    decode_shape: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    c_id: torch.Tensor,
    c_exp: torch.Tensor,
    alpha_id: torch.Tensor,
    alpha_exp: torch.Tensor,
    morphable,
    partner: torch.Tensor | None = None,
    neutral: bool = True,
    vertex_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise shape loss (Gao et al. 2020, eq. 8) plus facelab's neutral partner.

    ``L_pair = shape_l1(decode_shape(c_id, c_exp[partner]), morphable.shape(alpha_id, alpha_exp[partner]))``
    and, with ``neutral=True``, ``+ shape_l1(decode_shape(c_id, 0), morphable.shape(alpha_id, 0))``.

    Args:
        decode_shape: ``(c_id (B, D_id), c_exp (B, D_exp)) -> (B, V, 3)`` mm, the shape
            decoder (e.g. ``Gao2020Model.decode_shape``).
        c_id: ``(B, D_id)`` float, identity codes of the labelled images.
        c_exp: ``(B, D_exp)`` float, expression codes.
        alpha_id: ``(B, K_id)`` float, their ground-truth 3DMM identity coefficients.
        alpha_exp: ``(B, K_exp)`` float, ground-truth expression coefficients.
        morphable: the linear model (anything with ``shape(alpha_id, alpha_exp) -> (B, V, 3)``).
        partner: ``(B,)`` long, the expression donor B of each sample A
            (default :func:`swap_partners`).
        neutral: add the neutral partner term.
        vertex_mask: ``(V,)`` the template region ``T`` (see :func:`shape_l1`), or None.

    Returns:
        ``()`` scalar, mm (a sum of two mean-L1 terms when ``neutral``).

    >>> from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
    >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> s = m.sample(4, torch.Generator().manual_seed(0))
    >>> pairwise_shape_loss(m.shape, s["alpha_id"], s["alpha_exp"], s["alpha_id"], s["alpha_exp"], m)
    tensor(0.)
    """
    if not callable(decode_shape):
        raise TypeError(f"decode_shape: expected a callable (c_id, c_exp) -> (B, V, 3), got {type(decode_shape).__name__}")
    check_tensor(c_id, "c_id", ("B", None))
    B = c_id.shape[0]
    check_tensor(c_exp, "c_exp", (B, None))
    check_tensor(alpha_id, "alpha_id", (B, None))
    check_tensor(alpha_exp, "alpha_exp", (B, None))
    if partner is None:
        partner = swap_partners(B, c_id.device)
    check_tensor(partner, "partner", (B,), dtype_kind="int")
    if B and (int(partner.min()) < 0 or int(partner.max()) >= B):
        raise ValueError(f"partner: indices must lie in [0, {B}), got [{int(partner.min())}, {int(partner.max())}]")
    partner = partner.to(c_exp.device)

    def term(code_exp: torch.Tensor, coeff_exp: torch.Tensor) -> torch.Tensor:
        pred = decode_shape(c_id, code_exp)
        check_tensor(pred, "decode_shape output", (B, None, 3))
        target = _linear_shape(morphable, alpha_id, coeff_exp).to(device=pred.device, dtype=pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"morphable: its shapes {tuple(target.shape)} do not match the decoder's {tuple(pred.shape)}")
        return shape_l1(pred, target, vertex_mask)

    loss = term(c_exp[partner], alpha_exp[partner.to(alpha_exp.device)])
    if neutral:
        loss = loss + term(torch.zeros_like(c_exp), torch.zeros_like(alpha_exp))
    return loss


# ------------------------------------------------------------------ eq. 9


def uniform_laplacian(verts: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Uniform (umbrella) Laplacian ``L(v)_i = v_i - mean_{j in M_i} v_j``.

    ``M_i`` are the first-order neighbours of vertex ``i``: the ``j`` of every edge
    ``(i, j)`` in ``edge_index`` (give both directions, as
    :func:`facelab.morphable.grid.edges_from_faces` does). A vertex without neighbours
    gets 0.

    Args:
        verts: ``(B, V, C)`` float (``C = 3`` for positions in mm).
        edge_index: ``(2, E)`` long, row 0 = vertex ``i``, row 1 = neighbour ``j``.

    Returns:
        ``(B, V, C)``, in ``verts``' units.

    >>> verts = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0.0, 4.0, 0]]])
    >>> edges = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])   # a path 1 - 0 - 2
    >>> uniform_laplacian(verts, edges)[0].tolist()
    [[-1.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0]]
    """
    check_tensor(verts, "verts", ("B", "V", "C"))
    V = verts.shape[1]
    src, dst = _check_edge_index(edge_index, V).to(verts.device)
    nbr_sum = torch.zeros_like(verts).index_add(1, src, verts[:, dst])
    deg = torch.bincount(src, minlength=V).to(verts.dtype)
    lap = verts - nbr_sum / deg.clamp_min(1.0)[None, :, None]
    return lap * (deg > 0).to(verts.dtype)[None, :, None]


def _smoothness(lap: torch.Tensor, reference: torch.Tensor | None, vertex_mask: torch.Tensor | None) -> torch.Tensor:
    diff = lap if reference is None else lap - reference
    w = _check_vertex_mask(vertex_mask, lap.shape[1], lap)
    return _vertex_mean(diff.abs().sum(dim=-1), w)


def template_smoothness(
    verts: torch.Tensor,
    template: torch.Tensor,
    edge_index: torch.Tensor,
    vertex_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Template-relative shape smoothness ``L_smth`` (Gao et al. 2020, eq. 9).

    ``(1/V) sum_i ||L(s_hat)_i - L(s_bar)_i||_1``, averaged over the batch, with ``L``
    the :func:`uniform_laplacian` and ``s_bar`` the template. The paper sums over the
    vertices; facelab divides by ``V`` (the number of masked vertices with a mask) so
    that the value and its weight do not scale with the mesh resolution. It is zero
    for the template and for any translated copy of it, unlike
    :func:`laplacian_smoothness`.

    Args:
        verts: ``(B, V, 3)`` float, mm, reconstructed shapes.
        template: ``(V, 3)`` float, mm, the template (mean shape).
        edge_index: ``(2, E)`` long, mesh edges in both directions.
        vertex_mask: ``(V,)`` bool or float weights, or None for every vertex.

    Returns:
        ``()`` scalar, mm per vertex.

    >>> from facelab.morphable.grid import edges_from_faces, grid_faces
    >>> edges = edges_from_faces(grid_faces(3, 3))
    >>> template = torch.rand(9, 3)
    >>> template_smoothness(template[None] + 5.0, template, edges) < 1e-5
    tensor(True)
    """
    check_tensor(verts, "verts", ("B", "V", 3))
    check_tensor(template, "template", (verts.shape[1], 3))
    ref = uniform_laplacian(template[None].to(device=verts.device, dtype=verts.dtype), edge_index)
    return _smoothness(uniform_laplacian(verts, edge_index), ref, vertex_mask)


def laplacian_smoothness(verts: torch.Tensor, edge_index: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Conventional Laplacian smoothness, the baseline that eq. 9 replaces.

    ``(1/V) sum_i ||L(s_hat)_i||_1`` averaged over the batch: :func:`template_smoothness`
    with a flat template (zero Laplacian), so the two are directly comparable. It is
    not zero for the mean face: it would flatten real creases.

    Args:
        verts: ``(B, V, 3)`` float, mm.
        edge_index: ``(2, E)`` long, both directions.
        vertex_mask: ``(V,)`` bool or float weights, or None.

    Returns:
        ``()`` scalar, mm per vertex.

    >>> verts = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0.0, 4.0, 0]]])
    >>> edges = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])   # Laplacians (-1,-2,0), (2,0,0), (0,4,0)
    >>> laplacian_smoothness(verts, edges)                  # (3 + 2 + 4) / 3
    tensor(3.)
    """
    check_tensor(verts, "verts", ("B", "V", 3))
    return _smoothness(uniform_laplacian(verts, edge_index), None, vertex_mask)


# ------------------------------------------------------------------ eq. 10


def albedo_symmetry(albedo: torch.Tensor, symmetry: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Albedo symmetry loss ``L_symm = ||A - flip(A)||_1`` (Gao et al. 2020, eq. 10), as a mean.

    ``mean_{b, v in mask, rgb} |A[b, v] - A[b, symmetry[v]]|``; ``flip`` is the
    left/right vertex map (``MorphableModel.symmetry``).

    Args:
        albedo: ``(B, V, 3)`` float, linear RGB in [0, 1].
        symmetry: ``(V,)`` long, the mirror partner of each vertex.
        vertex_mask: ``(V,)`` bool or float weights, or None.

    Returns:
        ``()`` scalar, albedo units.

    >>> albedo = torch.tensor([[[0.2, 0.2, 0.2], [0.5, 0.5, 0.5], [0.8, 0.8, 0.8]]])
    >>> albedo_symmetry(albedo, torch.tensor([2, 1, 0]))   # |0.2 - 0.8| twice, 0 once, over 3
    tensor(0.4000)
    """
    check_tensor(albedo, "albedo", ("B", "V", 3))
    V = albedo.shape[1]
    check_tensor(symmetry, "symmetry", (V,), dtype_kind="int")
    if int(symmetry.min()) < 0 or int(symmetry.max()) >= V:
        raise ValueError(f"symmetry: vertex indices must lie in [0, {V}), got [{int(symmetry.min())}, {int(symmetry.max())}]")
    w = _check_vertex_mask(vertex_mask, V, albedo)
    diff = (albedo - albedo[:, symmetry.to(albedo.device)]).abs().mean(dim=-1)
    return _vertex_mean(diff, w)


# ------------------------------------------------------------------ modules


def _optional_buffer(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    module.register_buffer(name, None if value is None else value.detach().clone())


class ShapeL1Loss(nn.Module):
    """:func:`shape_l1` with a fixed vertex mask: ``forward(pred, target) -> ()`` mm.

    >>> ShapeL1Loss()(torch.ones(2, 5, 3), torch.zeros(2, 5, 3))
    tensor(1.)
    """

    def __init__(self, vertex_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        _optional_buffer(self, "vertex_mask", vertex_mask)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return shape_l1(pred, target, self.vertex_mask)


class _LinearShapeModel(nn.Module):
    """The mean and bases of a morphable model as buffers, with ``shape(alpha_id, alpha_exp)``."""

    def __init__(self, morphable) -> None:
        super().__init__()
        self.register_buffer("mean_shape", morphable.mean_shape.detach().clone())
        self.register_buffer("shape_basis", morphable.shape_basis.detach().clone())
        self.register_buffer("exp_basis", morphable.exp_basis.detach().clone())

    @property
    def dtype(self) -> torch.dtype:
        return self.mean_shape.dtype

    @property
    def device(self) -> torch.device:
        return self.mean_shape.device

    def shape(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        check_tensor(alpha_id, "alpha_id", ("B", self.shape_basis.shape[1]))
        check_tensor(alpha_exp, "alpha_exp", (alpha_id.shape[0], self.exp_basis.shape[1]))
        # Same order of operations as MorphableModel.shape, so the values agree bit for bit.
        B = alpha_id.shape[0]
        out = self.mean_shape + (alpha_id @ self.shape_basis.T).reshape(B, -1, 3)
        return out + (alpha_exp @ self.exp_basis.T).reshape(B, -1, 3)


class PairwiseShapeLoss(nn.Module):
    """:func:`pairwise_shape_loss` holding the linear model's buffers (moves with ``.to()``).

    ``forward(decode_shape, c_id, c_exp, alpha_id, alpha_exp, partner=None) -> ()`` mm.

    >>> from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
    >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> s = m.sample(2, torch.Generator().manual_seed(0))
    >>> PairwiseShapeLoss(m)(m.shape, s["alpha_id"], s["alpha_exp"], s["alpha_id"], s["alpha_exp"])
    tensor(0.)
    """

    def __init__(self, morphable, neutral: bool = True, vertex_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.linear = _LinearShapeModel(morphable)
        self.neutral = bool(neutral)
        _optional_buffer(self, "vertex_mask", vertex_mask)

    def forward(self, decode_shape, c_id, c_exp, alpha_id, alpha_exp, partner=None) -> torch.Tensor:
        return pairwise_shape_loss(decode_shape, c_id, c_exp, alpha_id, alpha_exp, self.linear,
                                   partner=partner, neutral=self.neutral, vertex_mask=self.vertex_mask)

    def extra_repr(self) -> str:
        return f"neutral={self.neutral}"


class TemplateSmoothnessLoss(nn.Module):
    """:func:`template_smoothness` with the template's Laplacian precomputed.

    ``forward(verts (B, V, 3) mm) -> ()`` mm per vertex.

    >>> from facelab.morphable.grid import edges_from_faces, grid_faces
    >>> template = torch.rand(9, 3)
    >>> TemplateSmoothnessLoss(template, edges_from_faces(grid_faces(3, 3)))(template[None])
    tensor(0.)
    """

    def __init__(self, template: torch.Tensor, edge_index: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        check_tensor(template, "template", ("V", 3))
        _check_edge_index(edge_index, template.shape[0])
        self.register_buffer("edge_index", edge_index.detach().clone())
        self.register_buffer("template_laplacian", uniform_laplacian(template.detach()[None], edge_index)[0])
        _optional_buffer(self, "vertex_mask", vertex_mask)

    def forward(self, verts: torch.Tensor) -> torch.Tensor:
        check_tensor(verts, "verts", ("B", self.template_laplacian.shape[0], 3))
        ref = self.template_laplacian[None].to(verts.dtype)
        return _smoothness(uniform_laplacian(verts, self.edge_index), ref, self.vertex_mask)


class LaplacianSmoothnessLoss(nn.Module):
    """:func:`laplacian_smoothness` as a module: ``forward(verts (B, V, 3) mm) -> ()``.

    >>> LaplacianSmoothnessLoss(torch.tensor([[0, 1], [1, 0]]))(torch.zeros(1, 2, 3))
    tensor(0.)
    """

    def __init__(self, edge_index: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        check_tensor(edge_index, "edge_index", (2, None), dtype_kind="int")
        self.register_buffer("edge_index", edge_index.detach().clone())
        _optional_buffer(self, "vertex_mask", vertex_mask)

    def forward(self, verts: torch.Tensor) -> torch.Tensor:
        return laplacian_smoothness(verts, self.edge_index, self.vertex_mask)


class AlbedoSymmetryLoss(nn.Module):
    """:func:`albedo_symmetry` with a fixed symmetry map: ``forward(albedo (B, V, 3)) -> ()``.

    >>> AlbedoSymmetryLoss(torch.tensor([1, 0]))(torch.tensor([[[0.0, 0, 0], [0.3, 0.3, 0.3]]]))
    tensor(0.3000)
    """

    def __init__(self, symmetry: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        check_tensor(symmetry, "symmetry", ("V",), dtype_kind="int")
        self.register_buffer("symmetry", symmetry.detach().clone())
        _optional_buffer(self, "vertex_mask", vertex_mask)

    def forward(self, albedo: torch.Tensor) -> torch.Tensor:
        return albedo_symmetry(albedo, self.symmetry, self.vertex_mask)
