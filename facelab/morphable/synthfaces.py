"""SynthFaces: a procedural face world with exact ground truth, and the 3DMM built from it.

:class:`FaceWorld` is the "true" generator. Every identity id (an int) deterministically
yields a neutral 3D shape (mm) and a per-vertex albedo (linear RGB), and
:meth:`FaceWorld.expression` adds blendshape expressions. The faces live on a regular
(u, v) grid (:mod:`facelab.morphable.grid`): u is azimuth around a vertical axis
(±100°), v is height (forehead at the top row, below the chin at the bottom row).

A true face = an analytic head-front surface whose features (eyes, nose, lips, chin,
jaw, ...) are moved and resized by ~23 anthropometric parameters (non-linearly),
plus a smooth random field, plus fine detail (short-wavelength ripples). PCA of a
population of such faces (:func:`build_synthfaces`) gives a :class:`MorphableModel`
in BFM's conventions; a new true face is *not* exactly in its span, which is what
lets the book test claims of going beyond the linear model.

Random numbers come from a counter-based hash of ``(seed, id, stream)``, so an
identity is the same whatever batch it is generated in.

Book chapter: ``book/02_morphable_models.ipynb``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab.checks import check_choice, check_positive, check_tensor
from facelab.config import torch_threads
from facelab.morphable import grid as _grid
from facelab.morphable.landmarks import snap_to_grid
from facelab.morphable.model import MorphableModel
from facelab.numerics import ordered_matmul, power, sigmoid

#: Bumped whenever the generator changes, so cached models are rebuilt.
GENERATOR_VERSION = 4
#: Population identities are drawn from ids >= this; data suites use ids below it.
POPULATION_ID_START = 5_000_000

# ---------------------------------------------------------------- grid geometry
U_MAX = math.radians(100.0)   # azimuth half-range of the grid
Y_TOP, Y_BOTTOM = 100.0, -100.0  # mm, forehead top and below-chin rows
U_LINEAR = 0.7                # share of linear spacing in u (rest cubic: denser at the front)
Y_LINEAR = 0.75               # same for rows: denser around the eyes/nose/mouth
R_REF = 85.0                  # mm per radian: frontal arc coordinate s = R_REF * u

# ---------------------------------------------------------------- head and jaw
HEAD_HALF_WIDTH = 76.0        # mm, superellipse half-axis along x
HEAD_HALF_DEPTH = 92.0        # mm, along z (head centre at the origin)
HEAD_EXPONENT = 2.4           # > 2 flattens the front of the head
HEAD_TOP_TAPER = 0.12         # relative narrowing of the head towards the top row
NECK_HALF_WIDTH, NECK_HALF_DEPTH, NECK_BACK = 52.0, 52.0, 22.0  # mm
CHIN_BOTTOM_Y = -90.0         # mm, where the jaw line crosses the mid-line
JAW_A, JAW_B = 18.0, 1.0      # jaw line y = CHIN_BOTTOM_Y + A u^2 + B u^8 (mm, u in rad)
JAW_SOFTNESS = 3.5            # mm, width of the face/neck blend across the jaw line
SCALE_CENTER_Y = 20.0         # mm, fixed point of the face-height scaling

# ---------------------------------------------------------------- feature layout (template, mm)
EYE_S, EYE_Y = 31.0, 28.0     # eye centres at s = ±EYE_S
EYE_W, EYE_HU, EYE_HL = 14.0, 5.0, 3.5  # half-width, upper and lower half-heights of the opening
IRIS_R, PUPIL_R = 5.2, 2.0
BROW_Y = 44.0
NASION_Y = 31.0
NOSE_TIP_Y = -4.0
ALA_S = 14.0
MOUTH_Y, MOUTH_W = -38.5, 25.0
UPPER_LIP_Y, LOWER_LIP_Y = -33.0, -44.0
CHIN_Y = -70.0
CHEEK_S, CHEEK_Y = 47.0, 10.0
FACE_MASK_U = math.radians(78.0)  # ears and the back of the head are outside the face region
FACE_MASK_TOP = 88.0

#: Anthropometric identity parameters (standard-normal scores), in this order.
SEMANTIC_NAMES: tuple[str, ...] = (
    "face_width", "face_height", "head_depth", "forehead_slope", "brow_ridge",
    "eye_spacing", "eye_depth", "eye_size", "eye_tilt", "nose_length", "nose_width",
    "nose_projection", "nose_bridge", "nose_tip", "cheekbones", "cheek_fullness",
    "lip_thickness", "mouth_width", "mouth_height", "chin", "chin_width", "jaw_width", "jaw_angle",
)
N_FIELD_BUMPS = 24            # smooth random field: Gaussian bumps per identity
FIELD_SIGMA = (12.0, 30.0)    # mm, range of their widths
N_DETAIL_WAVES = 32           # fine detail: plane waves per identity
DETAIL_WAVELENGTH = (4.0, 10.0)  # mm

# ---------------------------------------------------------------- albedo palette (linear RGB)
SKIN_LIGHT = (0.78, 0.52, 0.40)
SKIN_DARK = (0.30, 0.16, 0.09)
HAIR_BLOND = (0.42, 0.28, 0.14)
HAIR_BLACK = (0.025, 0.018, 0.014)
SCLERA = (0.72, 0.68, 0.63)
IRIS_BROWN, IRIS_BLUE, IRIS_GREEN = (0.10, 0.045, 0.02), (0.10, 0.20, 0.34), (0.10, 0.20, 0.07)
PUPIL = (0.01, 0.01, 0.01)
BEARD_PROB, BALD_PROB, MOLE_PROB = 0.3, 0.15, 0.35
N_MOLES = 3

# ---------------------------------------------------------------- expressions
SIDED_BLENDSHAPES = (
    "smile", "frown", "brow_raise", "brow_lower", "eye_close", "eye_squint", "eye_wide",
    "mouth_stretch", "cheek_puff", "nose_sneer", "mouth_shift", "jaw_shift",
)
CENTRAL_BLENDSHAPES = ("jaw_open", "brow_inner_up", "mouth_pucker", "jaw_forward", "upper_lip_raise", "lower_lip_depress")
EXPRESSION_MAX = 1.2          # sampled activations are clipped to [0, EXPRESSION_MAX]


@dataclass
class SynthFacesConfig:
    """How to build the SynthFaces world and its morphable model.

    Attributes:
        resolution: grid preset, ``"quick"`` (~1.4k vertices), ``"default"`` (~5.3k) or ``"large"`` (~21k).
        seed: world seed; every identity, the population and the model depend on it.
        n_population: identities sampled for the PCA (each also mirrored).
        n_shape, n_albedo: PCA components kept.
        smooth_field_mm: amplitude of each smooth random bump, mm.
        detail_mm: RMS of the fine detail, mm (what a linear model cannot capture).
        neutral_prob: share of near-neutral expressions from :meth:`FaceWorld.sample_expression`.
        n_expression_samples: samples used to estimate the expression standard deviations.
    """

    resolution: str = "default"
    seed: int = 0
    n_population: int = 300
    n_shape: int = 80
    n_albedo: int = 80
    smooth_field_mm: float = 1.2
    detail_mm: float = 0.3
    neutral_prob: float = 0.4
    n_expression_samples: int = 20000

    def __post_init__(self) -> None:
        check_choice(self.resolution, "resolution", list(_grid.GRID_PRESETS))
        for name in ("n_population", "n_shape", "n_albedo", "n_expression_samples"):
            check_positive(getattr(self, name), name, integer=True)
        if self.n_shape > 2 * self.n_population or self.n_albedo > 2 * self.n_population:
            raise ValueError("n_shape, n_albedo: cannot exceed 2 * n_population (the mirrored population size)")
        if not 0.0 <= self.neutral_prob <= 1.0:
            raise ValueError(f"neutral_prob: must lie in [0, 1], got {self.neutral_prob}")

    def key(self) -> str:
        """A short hash of the config and generator version (the cache key)."""
        blob = json.dumps({**dataclasses.asdict(self), "_v": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


# =================================================================== random numbers
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Counter-based uniform numbers in (0, 1), a pure function of ``(seed, id, stream, k)``.

    Args:
        seed: world seed; ids: ``(N,)`` long; stream: which variable block; n: numbers per id.

    Returns:
        ``(N, n)`` float64, independent of which other ids are in the batch.

    >>> a = hash_uniform(0, torch.tensor([3, 7]), 1, 4)
    >>> bool((hash_uniform(0, torch.tensor([7]), 1, 4) == a[1:]).all())
    True
    """
    ids_np = ids.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.uint64(seed & 0xFFFFFFFF) * np.uint64(1_000_003) + ids_np) + np.uint64(stream * 7919))
        counters = key[:, None] + np.arange(n, dtype=np.uint64)[None] * np.uint64(0x632BE59BD9B4E019)
    bits = _splitmix64(counters) >> np.uint64(11)
    return torch.from_numpy((bits.astype(np.float64) + 0.5) / float(2**53))


def hash_normal(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """``(N, n)`` float64 standard normals via Box-Muller on :func:`hash_uniform`.

    >>> hash_normal(1, torch.arange(4000), 2, 8).std().item() > 0.95
    True
    """
    u = hash_uniform(seed, ids, stream, 2 * n)
    return torch.sqrt(-2 * torch.log(u[:, :n])) * torch.cos(2 * math.pi * u[:, n:])


# =================================================================== small helpers
def _gauss(s, y, s0, y0, ss, sy):
    return torch.exp(-0.5 * ((s - s0) / ss) ** 2 - 0.5 * ((y - y0) / sy) ** 2)


def _pair(s, y, s0, y0, ss, sy):
    """A Gaussian on both sides of the face (at ±s0)."""
    return _gauss(s, y, s0, y0, ss, sy) + _gauss(s, y, -s0, y0, ss, sy)


def _smoothstep(t):
    t = t.clamp(0, 1)
    return t * t * (3 - 2 * t)


def _jaw_line(u, a=JAW_A, b=JAW_B, bottom=CHIN_BOTTOM_Y):
    return bottom + a * u**2 + b * power(u, 8)


def _superellipse_radius(u, a, b, n=HEAD_EXPONENT):
    return power(power(torch.abs(torch.cos(u) / b), n) + power(torch.abs(torch.sin(u) / a), n), -1.0 / n)


def _almond(s_local, y_local, w, hu, hl):
    """Signed ``1 - q`` of the eye opening (> 0 inside), in eye-local coordinates."""
    h = torch.where(y_local > 0, hu, hl)
    return 1 - (s_local / w) ** 2 - (y_local / h) ** 2


def _mix(a, b, t):
    return a + (b - a) * t


# =================================================================== the world
class FaceWorld:
    """The procedural SynthFaces generator ("the truth").

    Attributes (V = rows * cols vertices):
        grid_shape: ``(rows, cols)``; faces: ``(F, 3)`` long; symmetry: ``(V,)`` long.
        template_s, template_y: ``(V,)`` float, the template's frontal coordinates, mm.
        landmarks: ``(68,)`` long iBUG vertices; nose_tip: int; face_mask: ``(V,)`` bool.
        blendshapes: ``(n_blend, V, 3)`` float, mm; blendshape_names: list of str.

    >>> world = FaceWorld(SynthFacesConfig(resolution="quick"))
    >>> out = world.identity(torch.tensor([0, 1]))
    >>> out["shape"].shape, out["albedo"].shape
    (torch.Size([2, 1353, 3]), torch.Size([2, 1353, 3]))
    """

    def __init__(self, config: SynthFacesConfig | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.config = config or SynthFacesConfig()
        self.dtype = dtype
        rows, cols = _grid.grid_shape(self.config.resolution)
        self.grid_shape = (rows, cols)
        # Integer-built parameters are exactly antisymmetric, so the grid is exactly mirror-symmetric.
        w = (2 * torch.arange(cols, dtype=torch.float64) - (cols - 1)) / (cols - 1)
        v = ((rows - 1) - 2 * torch.arange(rows, dtype=torch.float64)) / (rows - 1)
        self.u_cols = U_MAX * (U_LINEAR * w + (1 - U_LINEAR) * w**3)
        self.s_cols = R_REF * self.u_cols
        half = 0.5 * (Y_TOP - Y_BOTTOM)
        self.y_rows = 0.5 * (Y_TOP + Y_BOTTOM) + half * (Y_LINEAR * v + (1 - Y_LINEAR) * v**3)
        yy, ss = torch.meshgrid(self.y_rows, self.s_cols, indexing="ij")
        self.template_s, self.template_y = ss.reshape(-1), yy.reshape(-1)
        self.faces = _grid.grid_faces(rows, cols)
        self.symmetry = _grid.grid_symmetry(rows, cols)
        self.blendshape_names = [f"{n}_{side}" for n in SIDED_BLENDSHAPES for side in ("L", "R")] + list(CENTRAL_BLENDSHAPES)
        base = self.surface(self._zero_params())
        self._mean = (0.5 * (base + self.mirror(base)))[0]  # exactly symmetric, not just to rounding
        self.nose_tip = self._find_nose_tip()
        self.landmarks = snap_to_grid(self._landmark_targets(), self.s_cols, self.y_rows, self.symmetry)
        self.landmarks[30] = self.nose_tip
        self.face_mask = self._face_mask()
        self.blendshapes = self._make_blendshapes().to(dtype)

    # ------------------------------------------------------------ basics
    @property
    def n_verts(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    @property
    def n_blend(self) -> int:
        return len(self.blendshape_names)

    def mirror(self, x: torch.Tensor, flip_x: bool = True) -> torch.Tensor:
        """Mirror a per-vertex field through the symmetry map (x -> -x for shapes).

        Args:
            x: ``(N, V, 3)`` float (mm for shapes; set ``flip_x=False`` for albedo).

        Returns:
            ``(N, V, 3)``: ``out[:, v] = diag(-1, 1, 1) x[:, symmetry[v]]``.
        """
        check_tensor(x, "x", ("N", self.n_verts, 3))
        out = x[:, self.symmetry.to(x.device)]
        if flip_x:
            out = out * torch.tensor([-1.0, 1.0, 1.0], dtype=x.dtype, device=x.device)
        return out

    def mean_surface(self) -> torch.Tensor:
        """``(V, 3)`` mm: the generator's base face (all parameters zero), exactly symmetric."""
        return self._mean.clone()

    # ------------------------------------------------------------ parameters
    def _zero_params(self) -> dict[str, torch.Tensor]:
        field = torch.zeros(1, N_FIELD_BUMPS, 4, dtype=torch.float64)
        field[..., 2] = 1.0  # unit widths, zero amplitudes
        return {
            "semantic": torch.zeros(1, len(SEMANTIC_NAMES), dtype=torch.float64),
            "field": field,
            "detail": torch.zeros(1, N_DETAIL_WAVES, 4, dtype=torch.float64),
        }

    def identity_params(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Random identity parameters of ``ids`` ``(N,)`` long (float64, deterministic per id).

        Returns a dict with ``semantic (N, 23)`` standard-normal scores (``SEMANTIC_NAMES``),
        ``field (N, 24, 4)`` smooth bumps (s, y, sigma, amplitude), ``detail (N, 32, 4)``
        plane waves (kx, ky, phase, amplitude) and ``albedo (N, 32)`` uniforms.
        """
        ids = self._check_ids(ids)
        seed, n = self.config.seed, ids.shape[0]
        semantic = hash_normal(seed, ids, 1, len(SEMANTIC_NAMES)).clamp(-3, 3)
        fu = hash_uniform(seed, ids, 2, 3 * N_FIELD_BUMPS).reshape(n, N_FIELD_BUMPS, 3)
        famp = hash_normal(seed, ids, 3, N_FIELD_BUMPS) * self.config.smooth_field_mm
        field = torch.stack([
            _mix(-85.0, 85.0, fu[..., 0]), _mix(-85.0, 90.0, fu[..., 1]),
            _mix(*FIELD_SIGMA, fu[..., 2]), famp], -1)
        du = hash_uniform(seed, ids, 4, 3 * N_DETAIL_WAVES).reshape(n, N_DETAIL_WAVES, 3)
        k = 2 * math.pi / _mix(*DETAIL_WAVELENGTH, du[..., 0])
        ang = 2 * math.pi * du[..., 1]
        # Each wave has RMS amp/sqrt(2); N waves of equal amplitude give the requested RMS.
        amp = torch.full_like(k, self.config.detail_mm * math.sqrt(2.0 / N_DETAIL_WAVES))
        detail = torch.stack([k * torch.cos(ang), k * torch.sin(ang), 2 * math.pi * du[..., 2], amp], -1)
        albedo = hash_uniform(seed, ids, 5, 32)
        return {"semantic": semantic, "field": field, "detail": detail, "albedo": albedo}

    @staticmethod
    def _check_ids(ids) -> torch.Tensor:
        check_tensor(ids, "ids", ("N",), dtype_kind="int")
        if ids.numel() and ids.min() < 0:
            raise ValueError(f"ids: identity ids must be >= 0, got {int(ids.min())}")
        return ids

    # ------------------------------------------------------------ shape
    def surface(self, params: dict[str, torch.Tensor], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Evaluate the analytic face surface for a batch of parameter sets.

        Args:
            params: as from :meth:`identity_params` (``albedo`` not needed).
            dtype: computation dtype.

        Returns:
            ``(N, V, 3)`` in ``dtype``, mm.
        """
        params = {k: v.to(dtype) for k, v in params.items()}
        z = {name: params["semantic"][:, k : k + 1] for k, name in enumerate(SEMANTIC_NAMES)}
        s, y = self.template_s[None].to(dtype), self.template_y[None].to(dtype)
        h, ds, dy = self._features(z, dtype)
        y_w = SCALE_CENTER_Y + (y + dy - SCALE_CENTER_Y) * (1 + 0.035 * z["face_height"])
        u_w = (s + ds) / R_REF
        # 2. head (superellipse) blended into the neck below the jaw line.
        taper = 1 - HEAD_TOP_TAPER * _smoothstep((y_w - 40) / 60)  # rounder top of the head
        r_face = _superellipse_radius(u_w, HEAD_HALF_WIDTH * (1 + 0.04 * z["face_width"]) * taper, HEAD_HALF_DEPTH * (1 + 0.03 * z["head_depth"]))
        r_neck = _superellipse_radius(u_w, NECK_HALF_WIDTH, NECK_HALF_DEPTH, 2.0) - NECK_BACK * torch.cos(u_w)
        jaw = _jaw_line(u_w, JAW_A * (1 - 0.08 * z["jaw_width"]), JAW_B * (1 + 0.2 * z["jaw_angle"]), CHIN_BOTTOM_Y - 2.5 * z["chin"])
        w_face = sigmoid((y_w - jaw) / JAW_SOFTNESS)
        # 3. features, as radial heights on the template coordinates, plus random fields.
        h = h + self._random_fields(params["field"], params["detail"])
        r = w_face * (r_face + h) + (1 - w_face) * r_neck
        return torch.stack([r * torch.sin(u_w), y_w.expand_as(r), r * torch.cos(u_w)], -1)

    def _random_fields(self, field: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """(N, V) smooth bumps + fine waves; both are separable on the grid, hence two
        (batch-invariant) matrix products."""
        s = self.s_cols.to(field.dtype)[None, None]  # (1, 1, cols)
        y = self.y_rows.to(field.dtype)[None, None]  # (1, 1, rows)
        sig = field[..., 2:3]
        gs = torch.exp(-0.5 * ((s - field[..., 0:1]) / sig) ** 2) * field[..., 3:4]
        gy = torch.exp(-0.5 * ((y - field[..., 1:2]) / sig) ** 2)
        bumps = ordered_matmul(gy.transpose(1, 2), gs)  # (N, rows, cols)
        # sin(a + b) = sin a cos b + cos a sin b with a = kx s + phase, b = ky y
        a = detail[..., 0:1] * s + detail[..., 2:3]
        b = detail[..., 1:2] * y
        amp = detail[..., 3:4]
        left = torch.cat([torch.cos(b), torch.sin(b)], 1).transpose(1, 2)       # (N, rows, 2K)
        right = torch.cat([amp * torch.sin(a), amp * torch.cos(a)], 1)          # (N, 2K, cols)
        return (bumps + ordered_matmul(left, right)).reshape(field.shape[0], -1)

    # Feature heights are split into terms affine in the semantic scores (precomputed once
    # as a mean field plus one field per score, applied by a matmul) and terms that are
    # non-linear in them (feature widths), evaluated only on the vertices of their region.
    _REGIONS = {  # (|s| min, |s| max, y min, y max), mm: where each non-linear term is non-zero
        "eyes": (8.0, 60.0, 8.0, 48.0),
        "nose": (0.0, 32.0, -22.0, 50.0),
        "lips": (0.0, 45.0, -62.0, -20.0),
        "chin": (0.0, 60.0, -100.0, -40.0),
    }

    def _linear_heights(self, s, y, z):
        h = -0.009 * (1 + 0.25 * z["forehead_slope"]) * torch.nn.functional.softplus(y - 45, beta=0.2) ** 2
        h = h - 3.0 * _pair(s, y, 62, 48, 12, 18)                                         # temples
        h = h + (3.5 + 1.2 * z["brow_ridge"]) * _pair(s, y, 27, BROW_Y, 17, 5.5)          # brow ridge
        h = h + (2.0 + 0.8 * z["brow_ridge"]) * _gauss(s, y, 0, BROW_Y - 2, 9, 6)         # glabella
        h = h - 2.5 * _gauss(s, y, 0, NASION_Y + 2, 7, 4.5)                               # nasion
        h = h - (10.0 + 1.5 * z["eye_depth"]) * _pair(s, y, EYE_S, EYE_Y - 1, 17, 11)     # sockets
        h = h + (4.0 + 1.0 * z["nose_tip"]) * _gauss(s, y, 0, NOSE_TIP_Y, 6.5, 5.5)
        h = h + 5.0 * _gauss(s, y, 0, -24, 22, 9)                                         # maxilla
        h = h - 3.0 * torch.exp(-((s / MOUTH_W) ** 6)) * torch.exp(-0.5 * ((y - MOUTH_Y) / 1.3) ** 2)
        h = h - 2.0 * _gauss(s, y, 0, -54, 16, 4)                                         # labiomental fold
        h = h + (5.0 + 1.5 * z["cheekbones"]) * _pair(s, y, CHEEK_S, CHEEK_Y, 15, 11)
        h = h + (2.0 + 1.5 * z["cheek_fullness"]) * _pair(s, y, 45, -25, 18, 16)
        h = h - 1.2 * _pair(s, y, 22, -20, 4, 12)                                         # nasolabial folds
        # warps of the template coordinates (ds, dy) are affine in the scores too
        ds = (2.0 * z["eye_spacing"] * torch.tanh(s / 8) * torch.exp(-0.5 * (s / 55) ** 2)
              * torch.exp(-0.5 * ((y - EYE_Y) / 18) ** 2))
        ds = ds + 2.5 * z["mouth_width"] * torch.tanh(s / 5) * torch.exp(-0.5 * (s / 40) ** 2) * torch.exp(-0.5 * ((y - MOUTH_Y) / 10) ** 2)
        nose_ramp = torch.where(y > NOSE_TIP_Y, _smoothstep((NASION_Y - y) / (NASION_Y - NOSE_TIP_Y)),
                                torch.exp(-0.5 * ((y - NOSE_TIP_Y) / 20) ** 2))
        dy = -3.0 * z["nose_length"] * torch.exp(-0.5 * (s / 20) ** 2) * nose_ramp
        dy = dy + 2.5 * z["mouth_height"] * torch.exp(-0.5 * (s / 35) ** 2) * torch.exp(-0.5 * ((y - MOUTH_Y) / 14) ** 2)
        return torch.stack([h.expand_as(ds + dy), ds.expand_as(h), dy.expand_as(h)], -1)

    @functools.cached_property
    def _affine_fields(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, 3)`` fields (height, ds, dy) at zero scores and ``(P, V*3)`` per-score slopes."""
        P = len(SEMANTIC_NAMES)
        eye = torch.cat([torch.zeros(1, P), torch.eye(P)]).to(torch.float64)
        z = {name: eye[:, k : k + 1] for k, name in enumerate(SEMANTIC_NAMES)}
        f = self._linear_heights(self.template_s[None], self.template_y[None], z)
        return f[0], (f[1:] - f[:1]).reshape(P, -1)

    @functools.cached_property
    def _region_index(self) -> dict[str, torch.Tensor]:
        sa, y = self.template_s.abs(), self.template_y
        return {name: torch.nonzero((sa >= a) & (sa <= b) & (y >= c) & (y <= d)).flatten()
                for name, (a, b, c, d) in self._REGIONS.items()}

    def _nonlinear_heights(self, name, s, y, z):
        if name == "eyes":
            eye_scale = 1 + 0.06 * z["eye_size"]
            h = 7.5 * _pair(s, y, EYE_S, EYE_Y, 9 * eye_scale, 7 * eye_scale)            # eyeballs
            return h + 2.5 * (1 - self._eye_opening(s, y, z)) * _pair(s, y, EYE_S, EYE_Y, 15, 9)  # eyelids
        if name == "nose":  # bridge ridge from the nasion to the tip, alae and nostrils
            nose_w = 1 + 0.08 * z["nose_width"]
            t = ((NASION_Y - y) / (NASION_Y - NOSE_TIP_Y)).clamp(0, 1)
            prof = 6 + 14 * power(t, 1.3) + 2.0 * z["nose_bridge"] * torch.sin(math.pi * t)
            prof = torch.where(y > NASION_Y, 6 * torch.exp(-0.5 * ((y - NASION_Y) / 6) ** 2), prof)
            prof = torch.where(y < NOSE_TIP_Y, 20 * torch.exp(-0.5 * ((y - NOSE_TIP_Y) / 5.5) ** 2), prof)
            width = (5.5 + 4 * t**2) * nose_w
            h = prof * (1 + 0.12 * z["nose_projection"]) * torch.exp(-0.5 * (s / width) ** 2)
            h = h + 8.0 * _pair(s, y, ALA_S * nose_w, NOSE_TIP_Y - 7, 6, 5.5)
            return h - 3.5 * _pair(s, y, 6.5 * nose_w, NOSE_TIP_Y - 10.5, 3, 1.8)
        if name == "lips":
            lip = 1 + 0.2 * z["lip_thickness"]
            lip_s = torch.exp(-power(s / 22, 4))
            h = (5.0 * lip) * lip_s * torch.exp(-0.5 * ((y - UPPER_LIP_Y) / (3.5 * lip)) ** 2)
            return h + (5.5 * lip) * lip_s * torch.exp(-0.5 * ((y - LOWER_LIP_Y) / (4.2 * lip)) ** 2)
        return (6.0 + 2.0 * z["chin"]) * _gauss(s, y, 0, CHIN_Y, 14 * (1 + 0.1 * z["chin_width"]), 9)

    def _features(self, z: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature heights, ds and dy warps, each ``(N, V)`` mm."""
        base, slope = self._affine_fields
        scores = torch.cat([z[name] for name in SEMANTIC_NAMES], 1)
        f = (base.to(dtype).reshape(1, -1) + ordered_matmul(scores, slope.to(dtype))).reshape(scores.shape[0], -1, 3)
        h = f[..., 0].clone()
        for name, idx in self._region_index.items():
            s, y = self.template_s[idx].to(dtype)[None], self.template_y[idx].to(dtype)[None]
            h[:, idx] += self._nonlinear_heights(name, s, y, z)
        return h, f[..., 1], f[..., 2]

    def _eye_opening(self, s, y, z):
        """Soft indicator (N, V) of the visible eyeball, both eyes."""
        scale = 1 + 0.06 * z["eye_size"]
        s_loc = s.abs() - EYE_S
        y_loc = y - EYE_Y - 0.08 * z["eye_tilt"] * s_loc
        return sigmoid(_almond(s_loc, y_loc, EYE_W * scale, EYE_HU * scale, EYE_HL * scale) / 0.08)

    # ------------------------------------------------------------ albedo
    @functools.cached_property
    def _albedo_template(self) -> dict[str, torch.Tensor]:
        """Identity-independent albedo maps on the template (computed once)."""
        s, y = self.template_s, self.template_y
        rgb = lambda c: torch.tensor(c, dtype=torch.float64)  # noqa: E731
        pair = lambda *args: _pair(s, y, *args)[:, None]  # noqa: E731
        factor = (1 + 0.12 * pair(42, -5, 16, 14) * rgb((0.6, -0.2, -0.1))                      # ruddy cheeks
                  + 0.08 * _gauss(s, y, 0, NOSE_TIP_Y, 8, 6)[:, None] * rgb((0.5, -0.2, -0.2)))  # and nose tip
        factor = factor * (1 - 0.18 * pair(EYE_S, EYE_Y + 2, 17, 9))                           # darker eye area
        mouth_line = torch.exp(-((s / MOUTH_W) ** 6)) * torch.exp(-0.5 * ((y - MOUTH_Y) / 1.3) ** 2)
        nostrils = _pair(s, y, 6.5, NOSE_TIP_Y - 10.5, 2.5, 1.5)
        sa = s.abs()
        jaw = _jaw_line(s / R_REF)
        cheek_top = -5 - 25 * (sa / 60) ** 2
        m_beard = torch.sigmoid((cheek_top - y) / 3) * torch.sigmoid((y - jaw + 6) / 2) * torch.sigmoid((70 - sa) / 4)
        m_must = torch.exp(-((s / 26) ** 4)) * torch.sigmoid((NOSE_TIP_Y - 12 - y) / 1.0) * torch.sigmoid((y - UPPER_LIP_Y - 2.5) / 1.0)
        dark = (1 - 0.5 * mouth_line) * (1 - 0.8 * nostrils)
        return {"factor": factor, "dark": dark, "beard": torch.maximum(m_beard, m_must),
                "eye_dist": torch.sqrt((sa - EYE_S) ** 2 + (y - EYE_Y) ** 2)}

    def _albedo(self, params: dict[str, torch.Tensor], ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        tm = {k: v.to(dtype) for k, v in self._albedo_template.items()}
        z = {name: params["semantic"][:, k : k + 1].to(dtype) for k, name in enumerate(SEMANTIC_NAMES)}
        a = params["albedo"].to(dtype)
        s, y = self.template_s.to(dtype)[None], self.template_y.to(dtype)[None]
        sa = s.abs()
        rgb = lambda c: torch.tensor(c, dtype=dtype)  # noqa: E731
        col = lambda k: a[:, k : k + 1, None]  # noqa: E731  (N, 1, 1)
        tone = power(col(0), 1.6)
        skin = _mix(rgb(SKIN_LIGHT), rgb(SKIN_DARK), tone)                       # (N, 1, 3)
        skin = skin + (col(1) - 0.5) * 0.06 * rgb((1.0, 0.1, -0.4)) * (1 - tone)  # redness
        # smooth colour blotches (low frequency, separable on the grid)
        bs, by = _mix(-70.0, 70.0, a[:, 2:6, None]), _mix(-80.0, 80.0, a[:, 6:10, None])
        gs = torch.exp(-0.5 * ((self.s_cols.to(dtype) - bs) / 25) ** 2) * 0.15 * (a[:, 10:14, None] - 0.5)
        gy = torch.exp(-0.5 * ((self.y_rows.to(dtype) - by) / 25) ** 2)
        blot = ordered_matmul(gy.transpose(1, 2), gs).reshape(-1, self.n_verts, 1)
        out = skin * tm["factor"] * (1 + blot)
        # hair colour: blond..black, plus a red tint
        hair = _mix(rgb(HAIR_BLOND), rgb(HAIR_BLACK), torch.sqrt(col(14))) + col(15) * 0.12 * rgb((1.0, 0.1, -0.2)) * (1 - col(14))
        # hairline (some identities bald)
        bald = a[:, 16:17] < BALD_PROB
        y_hair = 80 + 12 * (a[:, 17:18] - 0.5) + 0.002 * s**2 - 3 * torch.exp(-0.5 * (s / 8) ** 2)
        m_hair = sigmoid((y - y_hair) / 1.5) * (~bald)
        out = _mix(out, hair, 0.9 * m_hair[..., None])
        # eyebrows: arched bands; shape and darkness are identity specific (non-linear)
        arch, thick, length = 2 + 4 * a[:, 18:19], 4 + 4 * a[:, 19:20], 36 + 14 * a[:, 20:21]
        y_b = BROW_Y + 1 + 0.5 * arch * (1 - ((sa - 32) / 22) ** 2)
        th = thick * (1 - 0.5 * _smoothstep((sa - 12) / length))
        m_brow = sigmoid((th / 2 - (y - y_b).abs()) / 0.7) * sigmoid(sa - 11) * sigmoid((11 + length - sa) / 2.0)
        out = _mix(out, hair, (0.6 + 0.4 * col(21)) * m_brow[..., None])
        # beard / stubble with an identity-specific hashed grain
        lips = self._lip_mask(s, y, z)
        beard = (a[:, 22:23] < BEARD_PROB).to(dtype) * (0.3 + 0.7 * a[:, 23:24])
        grain = hash_uniform(self.config.seed, ids, 6, self.n_verts).to(dtype)
        out = _mix(out, hair * 0.7, (beard * tm["beard"] * (1 - lips) * (0.35 + 0.65 * grain))[..., None])
        # lips, mouth line, nostrils
        lip_col = skin * rgb((0.75, 0.45, 0.5)) * (0.8 + 0.4 * col(24)) + rgb((0.05, 0.0, 0.0))
        out = _mix(out, lip_col, 0.85 * lips[..., None]) * tm["dark"][:, None]
        # moles
        mole = hash_uniform(self.config.seed, ids, 7, 2 * N_MOLES).to(dtype)
        for k in range(N_MOLES):
            present = (a[:, 25 + k : 26 + k] < MOLE_PROB).to(dtype)
            ms, my = _mix(-60.0, 60.0, mole[:, 2 * k : 2 * k + 1]), _mix(-70.0, 60.0, mole[:, 2 * k + 1 : 2 * k + 2])
            rad = 1.2 + 1.3 * a[:, 28 + k : 29 + k]
            m = present * sigmoid((rad - torch.sqrt((s - ms) ** 2 + (y - my) ** 2)) / 0.4)
            out = _mix(out, skin * 0.25, m[..., None])
        # eyes: sclera, iris (identity colour), pupil, dark lash line on the upper lid
        iris = _mix(_mix(rgb(IRIS_BROWN), rgb(IRIS_BLUE), power(col(31), 3)), rgb(IRIS_GREEN), col(30) * (col(31) > 0.5))
        scale = 1 + 0.06 * z["eye_size"]
        d = tm["eye_dist"][None]
        eye = _mix(rgb(SCLERA), iris, sigmoid((IRIS_R * scale - d) / 0.5)[..., None])
        eye = _mix(eye, rgb(PUPIL), sigmoid((PUPIL_R * scale - d) / 0.4)[..., None])
        out = _mix(out, eye, self._eye_opening(s, y, z)[..., None])
        s_loc, y_loc = sa - EYE_S, y - EYE_Y - 0.08 * z["eye_tilt"] * (sa - EYE_S)
        lash = torch.exp(-0.5 * (_almond(s_loc, y_loc, EYE_W * scale, EYE_HU * scale, EYE_HL * scale) / 0.25) ** 2) * (y_loc > -1)
        out = out * (1 - 0.75 * lash[..., None])
        return out.clamp(0, 1)

    def _lip_mask(self, s, y, z):
        lip = 1 + 0.2 * z["lip_thickness"]
        top, bottom = UPPER_LIP_Y - 1 + 3.5 * lip, LOWER_LIP_Y + 1 - 4.2 * lip
        return torch.exp(-power(s / 23, 4)) * sigmoid((top - y) / 0.8) * sigmoid((y - bottom) / 0.8)

    # ------------------------------------------------------------ public
    def identity(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The true neutral shape and albedo of each identity.

        Args:
            ids: ``(N,)`` long, identity ids (>= 0). Ids >= ``POPULATION_ID_START`` are
                reserved for the population the PCA model is built from.

        Returns:
            dict with ``shape (N, V, 3)`` mm, ``albedo (N, V, 3)`` linear RGB in [0, 1],
            ``semantic (N, 23)`` anthropometric scores (``SEMANTIC_NAMES``), in ``self.dtype``.

        >>> world = load_world(SynthFacesConfig(resolution="quick"))
        >>> a = world.identity(torch.tensor([5, 9]))["shape"]
        >>> bool(torch.equal(a[1], world.identity(torch.tensor([9]))["shape"][0]))
        True
        """
        ids = self._check_ids(ids)
        params = self.identity_params(ids)
        return {
            "shape": self.surface(params, self.dtype),
            "albedo": self._albedo(params, ids, self.dtype),
            "semantic": params["semantic"].to(self.dtype),
        }

    def expression(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Expression offsets: a linear blend of the named blendshapes.

        Args:
            coeffs: ``(N, n_blend)`` float activations (0 = neutral, 1 = full).

        Returns:
            ``(N, V, 3)`` mm, to add to a neutral shape.

        >>> world = load_world(SynthFacesConfig(resolution="quick"))
        >>> world.expression(torch.zeros(2, world.n_blend)).abs().max().item()
        0.0
        """
        check_tensor(coeffs, "coeffs", ("N", self.n_blend))
        basis = self.blendshapes.to(device=coeffs.device, dtype=coeffs.dtype)
        return ordered_matmul(coeffs, basis.reshape(self.n_blend, -1)).reshape(coeffs.shape[0], -1, 3)

    @property
    def expression_random_dims(self) -> tuple[int, int]:
        """``(n_uniform, n_normal)`` random numbers :meth:`expression_from_random` takes per sample."""
        nb, n_pairs = self.n_blend, len(SIDED_BLENDSHAPES)
        return 2 * nb + 2 * n_pairs + 1, nb

    def sample_expression(self, n: int, generator: torch.Generator | None = None, neutral_prob: float | None = None) -> torch.Tensor:
        """Random blendshape activations; about ``neutral_prob`` of them near neutral.

        Non-neutral samples activate ~2 blendshapes (often both sides of a pair) with
        intensity in [0.2, 1], plus a little activation noise everywhere.

        Returns:
            ``(n, n_blend)`` float32 in ``[0, EXPRESSION_MAX]``.

        >>> world = load_world(SynthFacesConfig(resolution="quick"))
        >>> world.sample_expression(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 30])
        """
        check_positive(n, "n", integer=True)
        n_u, n_z = self.expression_random_dims
        u = torch.rand(n, n_u, generator=generator)
        z = torch.randn(n, n_z, generator=generator)
        return self.expression_from_random(u, z, neutral_prob)

    def expression_from_random(self, u: torch.Tensor, z: torch.Tensor, neutral_prob: float | None = None) -> torch.Tensor:
        """The deterministic part of :meth:`sample_expression`.

        Args:
            u: ``(n, n_uniform)`` uniforms in [0, 1); z: ``(n, n_normal)`` standard normals
                (sizes from :attr:`expression_random_dims`). Callers that need one random
                stream per sample (the photo collections) draw these per sample.

        Returns:
            ``(n, n_blend)`` float32 in ``[0, EXPRESSION_MAX]``.
        """
        p = self.config.neutral_prob if neutral_prob is None else neutral_prob
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"neutral_prob: must lie in [0, 1], got {p}")
        nb, n_pairs = self.n_blend, len(SIDED_BLENDSHAPES)
        n_u, n_z = self.expression_random_dims
        check_tensor(u, "u", ("n", n_u))
        check_tensor(z, "z", (u.shape[0], n_z))
        active = u[:, :nb] < 2.0 / nb
        level = 0.2 + 0.8 * u[:, nb : 2 * nb]
        both = u[:, 2 * nb : 2 * nb + n_pairs] < 0.6
        pair_jitter = u[:, 2 * nb + n_pairs : 2 * nb + 2 * n_pairs]
        left, right = active[:, 0 : 2 * n_pairs : 2], active[:, 1 : 2 * n_pairs : 2]
        either = left | right
        left_lvl = level[:, 0 : 2 * n_pairs : 2]
        active[:, 0 : 2 * n_pairs : 2] = torch.where(both, either, left)
        active[:, 1 : 2 * n_pairs : 2] = torch.where(both, either, right)
        level[:, 1 : 2 * n_pairs : 2] = torch.where(both, left_lvl * (0.85 + 0.15 * pair_jitter), level[:, 1 : 2 * n_pairs : 2])
        neutral = u[:, -1:] < p
        noise = (0.02 * z).abs()
        coeffs = torch.where(active & ~neutral, level, torch.zeros((), dtype=level.dtype)) + noise
        return coeffs.clamp(0, EXPRESSION_MAX)

    # ------------------------------------------------------------ annotations
    def _find_nose_tip(self) -> int:
        rows, cols = self.grid_shape
        mid = (cols - 1) // 2
        idx = torch.arange(rows) * cols + mid
        near = (self.y_rows > NOSE_TIP_Y - 12) & (self.y_rows < NOSE_TIP_Y + 12)
        z = torch.where(near, self._mean[idx, 2], torch.tensor(-1e9, dtype=torch.float64))
        return int(idx[int(torch.argmax(z))])

    def _landmark_targets(self) -> dict[int, tuple[float, float]]:
        t: dict[int, tuple[float, float]] = {}
        jaw_u = (-1.33, -1.32, -1.29, -1.24, -1.12, -0.93, -0.68, -0.37, 0.0)
        jaw_y = (25.0, 8.0, -9.0, -26.0)
        for k, u in enumerate(jaw_u):
            y = jaw_y[k] if k < len(jaw_y) else float(_jaw_line(torch.tensor(u))) + 6.0
            t[k] = (R_REF * u, y)
        for k, (s, y) in enumerate([(-52, 43), (-44, 47), (-35, 49), (-25, 48.5), (-15, 46)]):
            t[17 + k] = (s, y)
        for k, y in enumerate((NASION_Y, 20.0, 8.0, NOSE_TIP_Y)):
            t[27 + k] = (0.0, y)
        t[31], t[32], t[33] = (-11.0, NOSE_TIP_Y - 10.0), (-5.5, NOSE_TIP_Y - 11.5), (0.0, NOSE_TIP_Y - 12.5)
        third = EYE_W / 3
        up, lo = EYE_HU * (1 - 1 / 9), EYE_HL * (1 - 1 / 9)
        t[36], t[39] = (-EYE_S - EYE_W + 1, EYE_Y), (-EYE_S + EYE_W - 1, EYE_Y)
        t[37], t[38] = (-EYE_S - third, EYE_Y + up), (-EYE_S + third, EYE_Y + up)
        t[40], t[41] = (-EYE_S + third, EYE_Y - lo), (-EYE_S - third, EYE_Y - lo)
        t[48], t[49], t[50], t[51] = (-MOUTH_W, MOUTH_Y), (-16, -32.0), (-6, -30.5), (0.0, -31.0)
        t[57], t[58], t[59] = (0.0, -47.5), (-10, -47.0), (-19, -44.0)
        t[60], t[61], t[62] = (-MOUTH_W + 3, MOUTH_Y), (-9, MOUTH_Y + 1.5), (0.0, MOUTH_Y + 1.5)
        t[66], t[67] = (0.0, MOUTH_Y - 1.5), (-9, MOUTH_Y - 1.5)
        return t

    def _face_mask(self) -> torch.Tensor:
        u = self.template_s / R_REF
        return (u.abs() <= FACE_MASK_U) & (self.template_y <= FACE_MASK_TOP) & (self.template_y >= _jaw_line(u) - 1.0)

    # ------------------------------------------------------------ blendshapes
    def _make_blendshapes(self) -> torch.Tensor:
        """``(n_blend, V, 3)`` float64 displacement fields on the template (mm)."""
        s, y = self.template_s, self.template_y
        u = s / R_REF
        tangent = torch.stack([torch.cos(u), torch.zeros_like(u), -torch.sin(u)], -1)
        normal = torch.stack([torch.sin(u), torch.zeros_like(u), torch.cos(u)], -1)
        up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)

        def field(ds=0.0, dy=0.0, dn=0.0):
            as_t = lambda f: torch.as_tensor(f, dtype=torch.float64).expand_as(s)[:, None]  # noqa: E731
            return as_t(ds) * tangent + as_t(dy) * up + as_t(dn) * normal

        g = lambda *a: _gauss(s, y, *a)  # noqa: E731
        lip_s = torch.exp(-((s / 24) ** 4))
        mouth_band = torch.exp(-0.5 * ((y - MOUTH_Y) / 9) ** 2)
        lower_face = torch.sigmoid((MOUTH_Y - 1 + 45 * (s / 100) ** 2 - y) / 3) * torch.sigmoid((y - _jaw_line(u) + 15) / 3)
        # eye closing (left eye): lid slides down over the opening, the eyeball recedes
        s_loc, y_loc = s - EYE_S, y - EYE_Y
        wx = torch.exp(-((s_loc / 16) ** 4))
        y_up = EYE_HU * (1 - (s_loc / EYE_W) ** 2).clamp(min=0)
        y_lo = -EYE_HL * (1 - (s_loc / EYE_W) ** 2).clamp(min=0)
        gap = y_up - y_lo
        above = y_loc >= y_up
        inside = (~above) & (y_loc > y_lo)
        close_dy = torch.where(above, -gap * torch.exp(-0.5 * ((y_loc - y_up) / 5) ** 2), torch.where(inside, -(y_loc - y_lo) * 0.9, torch.zeros_like(s)))
        close_dn = torch.where(above, 1.2 * torch.exp(-0.5 * ((y_loc - y_up) / 5) ** 2), torch.where(inside, -2.5 * torch.ones_like(s), torch.zeros_like(s)))
        left = {
            "smile": field(4 * g(25, -38, 10, 9), 5 * g(25, -38, 10, 9) + 2 * g(38, -15, 14, 12), -2 * g(25, -38, 10, 9) + 2 * g(38, -15, 14, 12)),
            "frown": field(1 * g(25, -40, 10, 8), -4 * g(25, -40, 10, 8)),
            "brow_raise": field(dy=6 * g(28, 48, 22, 12)),
            "brow_lower": field(-3 * g(22, 45, 16, 8), -4 * g(22, 45, 16, 8)),
            "eye_close": field(dy=close_dy * wx, dn=close_dn * wx),
            "eye_squint": field(dy=2 * g(EYE_S, EYE_Y - 6, 12, 4) + 2 * g(35, 10, 15, 8)),
            "eye_wide": field(dy=2.5 * g(EYE_S, EYE_Y + 6, 13, 3.5)),
            "mouth_stretch": field(5 * g(25, -40, 12, 10), dn=-1 * g(25, -40, 12, 10)),
            "cheek_puff": field(dn=6 * g(40, -28, 16, 14)),
            "nose_sneer": field(dy=3 * g(ALA_S, NOSE_TIP_Y - 6, 8, 8) + 1.5 * g(12, -30, 8, 5), dn=1 * g(ALA_S, NOSE_TIP_Y - 6, 8, 8)),
            # shifts lean towards their side, so that _L and _R are not simply opposite
            "mouth_shift": field(ds=5 * g(0, -40, 30, 12) * (1 + 0.3 * torch.tanh(s / 20))),
            "jaw_shift": field(ds=6 * lower_face * (1 + 0.3 * torch.tanh(s / 30))),
        }
        central = {
            "jaw_open": field(dy=-15 * lower_face, dn=-6 * lower_face * torch.cos(u).clamp(min=0)
                              - 6 * torch.exp(-0.5 * ((y - MOUTH_Y) / 1.5) ** 2) * torch.exp(-((s / 22) ** 4))),
            "brow_inner_up": field(dy=5 * (g(12, 45, 10, 9) + g(-12, 45, 10, 9))),
            "mouth_pucker": field(ds=-0.35 * s * lip_s * mouth_band, dn=7 * lip_s * mouth_band),
            "jaw_forward": field(dn=5 * lower_face),
            "upper_lip_raise": field(dy=3 * g(0, -32, 18, 4)),
            "lower_lip_depress": field(dy=-3 * g(0, -45, 18, 4)),
        }
        shapes = []
        for name in SIDED_BLENDSHAPES:
            f = left[name][None]
            shapes += [f[0], self.mirror(f)[0]]
        for name in CENTRAL_BLENDSHAPES:
            f = central[name][None]
            shapes.append(0.5 * (f[0] + self.mirror(f)[0]))  # exactly symmetric
        return torch.stack(shapes)


# =================================================================== model building
@functools.lru_cache(maxsize=8)
def _world_cached(config_json: str) -> FaceWorld:
    return FaceWorld(SynthFacesConfig(**json.loads(config_json)))


def load_world(config: SynthFacesConfig | None = None) -> FaceWorld:
    """The (memoised) :class:`FaceWorld` of ``config``.

    >>> load_world(SynthFacesConfig(resolution="quick")).grid_shape
    (33, 41)
    """
    config = config or SynthFacesConfig()
    if not isinstance(config, SynthFacesConfig):
        raise TypeError(f"config: expected a SynthFacesConfig, got {type(config).__name__}")
    return _world_cached(json.dumps(dataclasses.asdict(config), sort_keys=True))


def pca_basis(data: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean ``(D,)``, orthonormal basis ``(D, k)`` and std ``(k,)`` of ``data`` ``(M, D)`` (float64)."""
    mean = data.mean(0)
    # QR first, then the SVD of the small (M, M) factor: LAPACK's SVD of a wide matrix
    # can be 20x slower for some shapes.
    q, r = torch.linalg.qr((data - mean).T)
    _, sv, wt = torch.linalg.svd(r.T)
    basis = q @ wt[:k].T
    # Fix each component's sign (largest-magnitude entry positive) so builds are reproducible.
    sign = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    return mean, basis * sign, sv[:k] / math.sqrt(data.shape[0] - 1)


def expression_basis(world: FaceWorld, n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal expression basis ``(3V, n_blend)`` and std ``(n_blend,)`` (mm).

    The basis spans the blendshapes exactly; it is rotated to the principal axes of the
    sampler's activations (second moment about neutral), so std is sorted descending.
    """
    blend = world.blendshapes.to(torch.float64).reshape(world.n_blend, -1).T  # (3V, nb)
    q, r = torch.linalg.qr(blend)
    c = world.sample_expression(n_samples, torch.Generator().manual_seed(seed)).to(torch.float64)
    second = r @ (c.T @ c / n_samples) @ r.T
    evals, evecs = torch.linalg.eigh(second)
    order = torch.argsort(evals, descending=True)
    basis = q @ evecs[:, order]
    sign = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    return basis * sign, evals[order].clamp(min=0).sqrt()


#: LAPACK threads for the PCA: near-degenerate components rotate when the thread count
#: changes (measured: components 76-77 of the quick model moved by 0.3), so the model is
#: built with one fixed count whatever the caller's setting.
BUILD_THREADS = 1


def _build(config: SynthFacesConfig) -> MorphableModel:
    with torch_threads(BUILD_THREADS):
        return _build_model(config)


def _build_model(config: SynthFacesConfig) -> MorphableModel:
    world = load_world(config)
    ids = torch.arange(POPULATION_ID_START, POPULATION_ID_START + config.n_population)
    true = world.identity(ids)
    shapes = true["shape"].to(torch.float64)
    albedos = true["albedo"].to(torch.float64)
    # Mirrored copies make the population, hence the mean, exactly symmetric.
    shapes = torch.cat([shapes, world.mirror(shapes)])
    albedos = torch.cat([albedos, world.mirror(albedos, flip_x=False)])
    V = world.n_verts
    mean, basis, std = pca_basis(shapes.reshape(2 * config.n_population, -1), config.n_shape)
    mean = mean.reshape(V, 3)
    mean = 0.5 * (mean + world.mirror(mean[None])[0])
    a_mean, a_basis, a_std = pca_basis(albedos.reshape(2 * config.n_population, -1), config.n_albedo)
    a_mean = a_mean.reshape(V, 3)
    a_mean = 0.5 * (a_mean + world.mirror(a_mean[None], flip_x=False)[0])
    e_basis, e_std = expression_basis(world, config.n_expression_samples, config.seed + 1)
    f32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
    return MorphableModel(
        mean_shape=f32(mean), shape_basis=f32(basis), shape_std=f32(std),
        exp_basis=f32(e_basis), exp_std=f32(e_std),
        mean_albedo=f32(a_mean), albedo_basis=f32(a_basis), albedo_std=f32(a_std),
        faces=world.faces.clone(), landmarks=world.landmarks.clone(), symmetry=world.symmetry.clone(),
        face_mask=world.face_mask.clone(), nose_tip=world.nose_tip, grid_shape=world.grid_shape,
        name=f"synthfaces-{config.resolution}",
        meta={"source": "synthfaces", "seed": config.seed, "resolution": config.resolution,
              "generator_version": GENERATOR_VERSION, "config": dataclasses.asdict(config),
              "blendshape_names": world.blendshape_names,
              "population_ids": [POPULATION_ID_START, POPULATION_ID_START + config.n_population]},
    )


def cache_path(config: SynthFacesConfig) -> Path:
    """Where :func:`build_synthfaces` caches the model of ``config``."""
    from facelab.config import cache_dir

    return cache_dir() / f"synthfaces-{config.resolution}-{config.key()}.npz"


def build_synthfaces(config: SynthFacesConfig | None = None, use_cache: bool = True) -> MorphableModel:
    """Build (or load from the cache) the SynthFaces :class:`MorphableModel`.

    Samples ``config.n_population`` identities (ids from ``POPULATION_ID_START``), adds
    their mirror images, and runs PCA for shape and albedo; the expression basis is the
    orthonormalised blendshapes. The ``.npz`` is cached under
    :func:`facelab.config.cache_dir` keyed by :meth:`SynthFacesConfig.key`.

    Args:
        config: the world and model settings (default :class:`SynthFacesConfig`).
        use_cache: read/write the cache.

    Returns:
        the model, float32 on the CPU.

    >>> cfg = SynthFacesConfig(resolution="quick", n_population=20, n_shape=10, n_albedo=10, n_expression_samples=500)
    >>> m = build_synthfaces(cfg, use_cache=False)
    >>> m.n_verts, m.n_shape, m.n_exp
    (1353, 10, 30)
    """
    config = config or SynthFacesConfig()
    if not isinstance(config, SynthFacesConfig):
        raise TypeError(f"config: expected a SynthFacesConfig, got {type(config).__name__}")
    path = cache_path(config) if use_cache else None
    if path is not None and path.exists():
        try:
            return MorphableModel.load(path)
        except ValueError:
            pass  # a stale or damaged cache entry is rebuilt below
    model = _build(config)
    if path is not None:
        # MorphableModel.save writes a temp file then renames; make the temp name unique per process.
        import os

        tmp_target = path.with_name(f"{path.stem}.{os.getpid()}.npz")
        model.save(tmp_target)
        os.replace(tmp_target, path)
    return model


def mesh_hierarchy(model_or_config: MorphableModel | SynthFacesConfig, n_levels: int | None = None) -> _grid.MeshHierarchy:
    """The exact down/up-sampling hierarchy of a grid model or config.

    >>> mesh_hierarchy(SynthFacesConfig(resolution="quick")).n_levels
    3
    """
    if isinstance(model_or_config, SynthFacesConfig):
        return _grid.hierarchy_for(model_or_config.resolution, n_levels)
    if isinstance(model_or_config, MorphableModel):
        if model_or_config.grid_shape is None:
            raise ValueError("model_or_config: the model has no grid_shape; a mesh hierarchy needs a grid mesh")
        rows, cols = model_or_config.grid_shape
        for name, shape in _grid.GRID_PRESETS.items():
            if shape == (rows, cols) and n_levels is None:
                n_levels = _grid.DEFAULT_LEVELS[name]
        if n_levels is None:
            raise ValueError(f"n_levels: required for the non-preset grid {rows}x{cols}")
        return _grid.MeshHierarchy(rows, cols, n_levels)
    raise TypeError(f"model_or_config: expected a MorphableModel or SynthFacesConfig, got {type(model_or_config).__name__}")
