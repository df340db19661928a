"""SynthFaces photo collections: rendered images with exact ground truth.

A :class:`PhotoCollection` is a ``torch.utils.data.Dataset`` over a suite's image
table (:mod:`facelab.data.suites`). Image ``i`` is a pure function of the suite
config and ``i``: its random numbers come from its own generator, so any batch
composition, worker split or cache gives the same pixels. Images are generated in
batches (one render call per batch) by :meth:`PhotoCollection.batch`; iterate with
:meth:`PhotoCollection.batches` or wrap in :class:`BatchStream` for a DataLoader.

Book chapter: ``book/03_rendering.ipynb`` (section "Photo collections").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

import torch
from torch.utils.data import Dataset, IterableDataset

from facelab.data import compose
from facelab.data.suites import BU3DFE_EXPRESSIONS, SUITES, ImageTable, SuiteConfig, build_table
from facelab.numerics import ordered_matmul

# Framing: the brow-to-chin height of the face covers this fraction of the image height.
FACE_FILL = 0.52
# Per-image random numbers: uniforms for pose/occluder/noise and for the background.
N_UNIFORM = 24
N_BACKGROUND = 12 + 3 * compose.BACKGROUND_NOISE_GRID**2
IDENTITY_CACHE_SIZE = 1024
# Level of detail: photos are rasterized at the coarsest grid level whose median edge (px) stays below this.
LOD_MAX_EDGE_PX = 1.5
NOISE_STREAM = 0x5DEECE66D  # xor-ed into an image's seed for its sensor noise
# Blendshape-name fragments that make up each prototype expression (BU-3DFE's six + neutral).
PROTOTYPE_BLENDS = {
    "neutral": (),
    "happy": ("smile", "eye_squint"),
    "surprise": ("jaw_open", "brow_raise", "eye_wide", "brow_inner_up"),
    "anger": ("brow_lower", "frown", "nose_sneer"),
    "sadness": ("brow_inner_up", "frown", "lower_lip_depress"),
    "disgust": ("nose_sneer", "upper_lip_raise", "brow_lower"),
    "fear": ("mouth_stretch", "brow_raise", "eye_wide", "brow_inner_up"),
}


def _image_seed(seed: int, suite_index: int, index: int) -> int:
    """A 63-bit seed for one image (a fixed mix, not Python's randomised hash)."""
    x = (seed * 0x9E3779B97F4A7C15 + suite_index * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**63 - 1)
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93) & (2**63 - 1)


class PhotoCollection(Dataset):
    """Rendered SynthFaces images of one suite, with their ground truth.

    Args:
        config: a :class:`SuiteConfig` (or pass the suite name and overrides to
            :func:`make_suite`).
        device: where rendering happens; samples are returned on this device.

    Each sample (a dict; :meth:`batch` returns the same keys with a leading batch dim):

    =====================  ======================  ==========================================
    key                    shape                   meaning
    =====================  ======================  ==========================================
    image                  (3, H, W) float [0,1]   the photo
    label                  () long                 identity label within the suite
    identity               () long                 world identity id
    condition              () long                 index into ``condition_names``
    shape                  (V, 3) float, mm        true shape (identity + expression), model frame
    shape_identity         (V, 3) float, mm        true neutral identity shape
    shape_expression       (V, 3) float, mm        true expression offset
    albedo                 (V, 3) float            true per-vertex albedo
    alpha_id               (K_id,) float           projection of the identity shape on the model
    alpha_exp              (K_exp,) float          expression coefficients (exact)
    beta                   (K_alb,) float          projection of the albedo on the model
    blend                  (n_blend,) float        the world's blendshape weights
    pose                   (6,) float              pitch, yaw, roll (rad), tx, ty (px), scale (px/mm)
    sh                     (27,) float             spherical-harmonics lighting
    landmarks2d            (68, 2) float, px       projected iBUG-68 landmarks
    landmarks3d            (68, 3) float, mm       landmarks on the true shape, model frame
    face_mask              (1, H, W) float         pixels the face mesh covers
    occlusion_mask         (1, H, W) float         pixels an occluder covers
    occluder               () long                 index into ``facelab.data.compose.OCCLUDERS``
    yaw_deg                () float                the yaw in degrees
    =====================  ======================  ==========================================
    """

    def __init__(self, config: SuiteConfig, device: torch.device | str | None = None):
        from facelab.morphable import SynthFacesConfig, build_synthfaces, load_world
        from facelab.render import RenderSettings

        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        world_cfg = SynthFacesConfig(resolution=config.resolution)
        self.world = load_world(world_cfg)
        self.model = build_synthfaces(world_cfg).to(self.device)
        self.table: ImageTable = build_table(config)
        self.render_settings = RenderSettings(image_size=config.image_size, backend=config.backend, batch_invariant=True)
        self._suite_index = SUITES.index(config.suite)  # part of every image's seed
        self._identity_cache: OrderedDict[int, dict] = OrderedDict()
        self._prototypes = self._prototype_expressions()
        # The expression basis spans the blendshapes, so a photo's expression coefficients
        # are its blend weights times the blendshapes' coefficients (K_blend x K_exp).
        self._blend_to_alpha_exp = self.model.project_expression(self.world.blendshapes.to(self.device))
        self._face_height_mm, self._face_centre = self._framing()
        self.render_level, self._render_faces, self._render_verts = self._level_of_detail()

    # ----------------------------------------------------------- bookkeeping
    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.config.suite} with {len(self)} images")
        out = self.batch(torch.tensor([index % len(self)]))
        return {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in out.items()}

    @property
    def condition_names(self) -> tuple[str, ...]:
        return self.table.condition_names

    @property
    def n_identities(self) -> int:
        return self.config.n_identities

    def __repr__(self) -> str:
        H, W = self.config.image_size
        return f"PhotoCollection({self.config.suite!r}, images={len(self)}, identities={self.n_identities}, size={H}x{W})"

    def batches(self, batch_size: int = 64, indices: torch.Tensor | None = None, progress: bool = False) -> Iterator[dict]:
        """Yield :meth:`batch` over ``indices`` (default: all images, in order)."""
        if indices is None:
            indices = torch.arange(len(self))
        chunks = torch.split(torch.as_tensor(indices), batch_size)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"synth {self.config.suite}", unit="batch")
        for chunk in chunks:
            yield self.batch(chunk)

    # ------------------------------------------------------------- identities
    def identities(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """True neutral shape/albedo and their model projections for world ids ``(N,)``."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        missing = [int(i) for i in ids.unique() if int(i) not in self._identity_cache]
        if missing:
            got = self.world.identity(torch.tensor(missing))
            shape = got["shape"].to(self.device)
            albedo = got["albedo"].to(self.device)
            alpha = self.model.project_shape(shape)
            beta = self.model.project_albedo(albedo)
            for j, i in enumerate(missing):
                self._identity_cache[i] = {"shape": shape[j], "albedo": albedo[j], "alpha_id": alpha[j], "beta": beta[j]}
                if len(self._identity_cache) > IDENTITY_CACHE_SIZE:
                    self._identity_cache.popitem(last=False)
        rows = [self._identity_cache[int(i)] for i in ids]
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}

    def scan(self, label: int) -> torch.Tensor:
        """The ground-truth neutral scan ``(V, 3)`` mm of suite identity ``label`` (MICC-style)."""
        if not 0 <= label < self.n_identities:
            raise IndexError(f"label {label} out of range [0, {self.n_identities})")
        world_id = int(self.table.identity[self.table.label == label][0])
        return self.identities(torch.tensor([world_id]))["shape"][0]

    # ----------------------------------------------------------- generation
    def _prototype_expressions(self) -> torch.Tensor:
        """``(7, n_blend)`` blend weights of the BU-3DFE prototype expressions."""
        names = list(self.world.blendshape_names)
        protos = torch.zeros(len(BU3DFE_EXPRESSIONS), len(names))
        for k, expr in enumerate(BU3DFE_EXPRESSIONS):
            for j, name in enumerate(names):
                if any(part in name for part in PROTOTYPE_BLENDS[expr]):
                    protos[k, j] = 1.0
        return protos

    def _framing(self) -> tuple[float, torch.Tensor]:
        lm = self.model.mean_shape[self.model.landmarks].cpu()
        height = float(lm[[19, 24], 1].mean() - lm[8, 1])
        centre = torch.stack([lm[:, 0].mean(), 0.5 * (lm[[19, 24], 1].mean() + lm[8, 1]) + 0.12 * height, lm[:, 2].mean()])
        return height, centre

    def _level_of_detail(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """The mesh level photos are rasterized at: ``(level, faces, vertex ids in the full mesh)``.

        Small images cannot show triangles much smaller than a pixel, so ``render_lod=-1``
        picks the coarsest level of the exact grid hierarchy whose median edge still
        projects below :data:`LOD_MAX_EDGE_PX`. Coarse vertices are vertices of the true
        mesh, so the render is the true surface at that sampling; the ground truth
        (shapes, landmarks) is always the full mesh.
        """
        from facelab.morphable import mesh_hierarchy

        hierarchy = mesh_hierarchy(self.model)
        ids = torch.arange(self.model.n_verts)
        options = []
        for k, level in enumerate(hierarchy.levels):
            if k:
                ids = ids[level.parent_index]
            options.append((level.faces, ids.clone()))
        want = self.config.render_lod
        if want >= len(options):
            raise ValueError(f"render_lod: {want} but the mesh has levels 0..{len(options) - 1}")
        if want < 0:
            px_per_mm = FACE_FILL * min(self.config.image_size) / self._face_height_mm
            want = 0
            for k, (faces, ids) in enumerate(options):
                xy = self.model.mean_shape[ids, :2].cpu()
                edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
                edge_px = (xy[edges[:, 0]] - xy[edges[:, 1]]).norm(dim=1).median() * px_per_mm
                if edge_px <= LOD_MAX_EDGE_PX:
                    want = k
        faces, ids = options[want]
        return want, faces.to(self.device), ids.to(self.device)

    def _draw(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image random numbers (one generator per image), turned into an
        expression and a light by vectorised transforms."""
        from facelab.render.sh import SH_RANDOM_DIMS, sh_from_random

        eu, ez = self.world.expression_random_dims
        n_u = N_UNIFORM + N_BACKGROUND + eu + SH_RANDOM_DIMS[0]
        n_z = ez + SH_RANDOM_DIMS[1]
        uniforms, normals = [], []
        for i in index.tolist():
            g = torch.Generator().manual_seed(_image_seed(self.config.seed, self._suite_index, i))
            uniforms.append(torch.rand(n_u, generator=g))
            normals.append(torch.randn(n_z, generator=g))
        u, z = torch.stack(uniforms), torch.stack(normals)
        a, b = N_UNIFORM, N_UNIFORM + N_BACKGROUND
        return {
            "u": u[:, :a],
            "bg": u[:, a:b],
            "blend": self.world.expression_from_random(u[:, b : b + eu], z[:, :ez]),
            "sh": sh_from_random(u[:, b + eu :], z[:, ez:]),
        }

    def _conditions_of(self, index: torch.Tensor, field: str) -> torch.Tensor:
        values = torch.tensor([getattr(c, field) for c in self.table.conditions], dtype=torch.float32)
        return values[self.table.condition[index]]

    def _yaw_deg(self, index: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        fixed = self.table.fixed_yaw_deg[index]
        ymax = self._conditions_of(index, "yaw_max")
        ystd = self._conditions_of(index, "yaw_std")
        uniform = torch.tensor([self.table.conditions[c].yaw_dist == "uniform" for c in self.table.condition[index].tolist()])
        normal = math.sqrt(2) * torch.erfinv((2 * u[:, 0] - 1).clamp(-0.999999, 0.999999)) * ystd
        yaw = torch.where(uniform, (2 * u[:, 0] - 1) * ymax, normal.clamp(-ymax, ymax))
        return torch.where(torch.isnan(fixed), yaw, fixed)

    def _expressions(self, index: torch.Tensor, blend: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        scale = self._conditions_of(index, "expression_scale")
        neutral = u[:, 4] < self._conditions_of(index, "neutral_prob")
        blend = torch.where(neutral[:, None], torch.zeros_like(blend), blend * scale[:, None])
        proto = self.table.expression_prototype[index]
        has_proto = proto >= 0
        if has_proto.any():
            # Each identity shows the prototype at its own intensity (0.6..1.0).
            intensity = 0.6 + 0.4 * u[:, 5]
            blend = torch.where(has_proto[:, None], self._prototypes[proto.clamp_min(0)] * intensity[:, None], blend)
        return blend

    def scene(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The scene parameters of images ``index`` (``(B,)`` long): everything but the pixels.

        Keys: ``identity (B,)``, ``label``, ``condition``, ``blend (B, n_blend)``,
        ``angles (B, 3)`` rad, ``scale_jitter (B,)``, ``shift (B, 2)`` px, ``sh (B, 27)``,
        ``background (B, N_BACKGROUND)``, ``occluder (B,)``, ``occluder_u (B, 8)``,
        ``blur (B,)`` px, ``noise_std (B,)``, ``noise_seed (B,)`` long. Edit them and pass to
        :meth:`render_scene` to make a controlled image (the README gallery does).
        """
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if index.numel() == 0:
            raise ValueError("index: empty batch")
        if index.min() < 0 or index.max() >= len(self):
            raise IndexError(f"index: values must lie in [0, {len(self)}), got [{int(index.min())}, {int(index.max())}]")
        H, W = self.config.image_size
        draws = self._draw(index)
        u = draws["u"]
        yaw = self._yaw_deg(index, u)
        pitch = (2 * u[:, 1] - 1) * self._conditions_of(index, "pitch_max")
        roll = (2 * u[:, 2] - 1) * self._conditions_of(index, "roll_max")
        sh = draws["sh"].clone()
        # Harsher light: stronger directional bands relative to the ambient term.
        harsh = self._conditions_of(index, "light_harshness")
        sh.view(-1, 3, 9)[:, :, 1:] *= (0.5 + 1.5 * harsh)[:, None, None]
        occluding = u[:, 8] < self._conditions_of(index, "occlusion_prob")
        return {
            "identity": self.table.identity[index],
            "label": self.table.label[index],
            "condition": self.table.condition[index],
            "blend": self._expressions(index, draws["blend"], u),
            "angles": torch.deg2rad(torch.stack([pitch, yaw, roll], 1)),
            "scale_jitter": self._conditions_of(index, "scale_jitter") * (2 * u[:, 3] - 1),
            "shift": self._conditions_of(index, "shift_jitter")[:, None] * (2 * u[:, 6:8] - 1) * torch.tensor([W, H]),
            "sh": sh,
            "background": draws["bg"],
            "occluder": torch.where(occluding, 1 + (u[:, 9] * 3).long().clamp(max=2), torch.zeros_like(index)),
            "occluder_u": u[:, 10:18],
            "blur": u[:, 18] * self._conditions_of(index, "blur_max"),
            "noise_std": u[:, 19] * self._conditions_of(index, "noise_max"),
            "noise_seed": torch.tensor([_image_seed(self.config.seed, self._suite_index, i) ^ NOISE_STREAM for i in index.tolist()]),
        }

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generate the images ``index`` (``(B,)`` long) as one batch of samples.

        Generation builds no autograd graph; use :meth:`render_scene` on a
        :meth:`scene` whose tensors require grad to differentiate through it.
        """
        with torch.no_grad():
            return self.render_scene(self.scene(index))

    def render_scene(self, scene: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Render scene parameters (see :meth:`scene`) to a batch of samples."""
        from facelab.camera import WeakPerspectiveCamera, euler_to_rotation, rotate_points
        from facelab.render import render

        dev = self.device
        H, W = self.config.image_size
        ident = self.identities(scene["identity"])
        blend = scene["blend"]
        offset = self.world.expression(blend).to(dev)
        shape = ident["shape"] + offset

        angles = scene["angles"].to(dev)
        scale = (FACE_FILL * min(H, W) / self._face_height_mm * (1 + scene["scale_jitter"])).to(dev)
        centre_cam = rotate_points(self._face_centre.to(dev).expand(angles.shape[0], 1, 3), euler_to_rotation(angles))[:, 0]
        shift = scene["shift"].to(dev)
        tx = W / 2 - scale * centre_cam[:, 0] + shift[:, 0]
        ty = H / 2 + scale * centre_cam[:, 1] + shift[:, 1]
        pose = torch.cat([angles, tx[:, None], ty[:, None], scale[:, None]], 1)
        sh = scene["sh"].to(dev)

        ids = self._render_verts
        out = render(shape[:, ids], self._render_faces, ident["albedo"][:, ids], sh, pose, settings=self.render_settings)
        landmarks3d = shape[:, self.model.landmarks]
        landmarks2d = WeakPerspectiveCamera.from_pose(pose).project(landmarks3d)[..., :2]
        face_mask = out.mask
        image = out.image * face_mask + compose.backgrounds(scene["background"].to(dev), H, W) * (1 - face_mask)

        occluder = scene["occluder"].to(dev)
        occ_mask, occ_colour = compose.occluder_masks(occluder, landmarks2d.detach(), scene["occluder_u"].to(dev), H, W)
        image = image * (1 - occ_mask) + occ_colour * occ_mask
        image = compose.gaussian_blur(image, scene["blur"].to(dev))
        noise = torch.stack([torch.randn(image.shape[1:], generator=torch.Generator().manual_seed(int(k))) for k in scene["noise_seed"]]).to(dev)
        image = (image + noise * scene["noise_std"].to(dev)[:, None, None, None]).clamp(0, 1)

        return {
            "image": image,
            "label": scene["label"].to(dev),
            "identity": scene["identity"].to(dev),
            "condition": scene["condition"].to(dev),
            "shape": shape,
            "shape_identity": ident["shape"],
            "shape_expression": offset,
            "albedo": ident["albedo"],
            "alpha_id": ident["alpha_id"],
            "alpha_exp": ordered_matmul(blend.to(dev), self._blend_to_alpha_exp),
            "beta": ident["beta"],
            "blend": blend.to(dev),
            "pose": pose,
            "sh": sh,
            "landmarks2d": landmarks2d,
            "landmarks3d": landmarks3d,
            "face_mask": face_mask,
            "occlusion_mask": occ_mask,
            "occluder": occluder,
            "yaw_deg": torch.rad2deg(angles[:, 1]),
        }


class BatchStream(IterableDataset):
    """An endless (or one-pass) stream of generated batches for a ``DataLoader``.

    Use with ``DataLoader(stream, batch_size=None)``. Each worker takes every
    ``num_workers``-th batch, so the stream is the same for any worker count.
    """

    def __init__(self, collection: PhotoCollection, batch_size: int = 64, shuffle: bool = True, seed: int = 0, epochs: int | None = 1):
        self.collection, self.batch_size, self.shuffle, self.seed, self.epochs = collection, batch_size, shuffle, seed, epochs

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = torch.randperm(len(self.collection), generator=torch.Generator().manual_seed(self.seed + epoch)) if self.shuffle else torch.arange(len(self.collection))
            for k, chunk in enumerate(torch.split(order, self.batch_size)):
                if k % nw == wid:
                    # batch() builds no graph; yielding from inside a no_grad block would leave
                    # gradients off in the consumer's code while this generator is suspended
                    yield self.collection.batch(chunk)
            epoch += 1


def make_suite(suite: str, profile: str = "quick", device=None, **overrides) -> PhotoCollection:
    """Build a SynthFaces suite.

    >>> lfw = make_suite("lfw", n_identities=20, pairs_per_fold=2, image_size=32)
    >>> len(lfw), tuple(lfw.table.pairs.shape)
    (80, (40, 2))
    """
    return PhotoCollection(SuiteConfig(suite=suite, profile=profile, **overrides), device=device)
