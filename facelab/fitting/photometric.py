"""Multi-image photometric 3DMM fitting (analysis by synthesis) and Liu et al.'s training targets.

Book chapter: ``book/04_fitting.ipynb`` ("Fitting a 3DMM to a photo collection").

Liu et al. 2018 build the regression targets of their encoder by fitting one 3DMM
identity to *all* the photos of a CASIA-WebFace subject. facelab does this in two steps:

1. :func:`facelab.fitting.fit_landmarks` (closed form + Gauss-Newton) gives identity,
   expressions and weak-perspective poses from the 68 landmarks;
2. Adam refines everything on the negative log posterior
   ``w_photo * sum_b mean_pix ||render_b - image_b||^2 + sum_b ||lm_b - lm2d_b||^2 / std_px^2
   + ||a_id||^2 + ||a_exp||^2 + ||b_alb||^2`` (standardised coefficients ``a = alpha / std``),
   over the face-region pixels the current fit covers and no occluder hides.

Images of one identity share the identity shape ``alpha_id`` and the albedo ``beta``;
expression, pose and SH lighting are per image. All subjects are fitted in one batch.
Lighting starts from the closed-form least-squares SH fit under the mean albedo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch

from facelab.checks import check_choice, check_nonnegative_int, check_positive, check_tensor
from facelab.config import with_options
from facelab.fitting.landmarks import (
    N_LANDMARKS, LandmarkFit, LandmarkFitConfig, fit_landmarks, group_index_of, leading_components,
)
from facelab.morphable.model import MorphableModel
from facelab.render.rasterize import interpolate
from facelab.render.renderer import RenderSettings, render
from facelab.render.sh import sh_basis

__all__ = [
    "PhotometricFitConfig", "PhotometricFit", "fit_photometric", "identity_rmse",
    "CollectionFitConfig", "fit_collection", "fit_collection_study", "FIT_SUITES",
]

#: model standard deviations are clamped to at least this so standardisation stays finite
MIN_STD = 1e-6
#: ridge (relative to the trace) of the closed-form SH least squares
SH_RIDGE = 1e-6
#: a pixel belongs to the face region when the interpolated face-mask indicator exceeds this
FACE_REGION_THRESHOLD = 0.5
#: images per subject of the single- vs multi-image study (Liu et al.'s figure)
STUDY_IMAGES_PER_SUBJECT = (1, 2, 4, 8)


@dataclass
class PhotometricFitConfig:
    """Options of :func:`fit_photometric`.

    Attributes:
        n_steps: Adam steps of the photometric refinement (0 = landmark fit + SH only).
        lr_coeff: Adam step for the standardised shape/expression/albedo coefficients.
        lr_angle: Adam step for pitch/yaw/roll, rad.
        lr_trans: Adam step for the translation, px.
        lr_log_scale: Adam step for the log of the scale.
        lr_sh: Adam step for the 27 SH coefficients.
        photo_weight: weight of the per-image mean squared colour error (per pixel,
            summed over RGB); the landmark and prior terms have weight 1.
        landmark_std_px: landmark noise std, px (the landmark term is ``sum d^2 / std^2``).
        shape_prior: multiplier of the identity prior ``||alpha_id / std_id||^2``.
        exp_prior: the same for expression.
        albedo_prior: the same for albedo.
        n_shape: leading identity components fitted, at most (None = all).
        n_exp: leading expression components fitted, at most (None = all).
        n_albedo: leading albedo components fitted, at most (None = all).
        backend: rasterizer backend (see :class:`facelab.render.RenderSettings`).
        landmark_fit: options of the initial :func:`fit_landmarks` (its ``n_shape`` and
            ``n_exp`` are set from this config).
    """

    n_steps: int = 60
    lr_coeff: float = 0.05
    lr_angle: float = 0.005
    lr_trans: float = 0.1
    lr_log_scale: float = 0.005
    lr_sh: float = 0.01
    photo_weight: float = 50000.0
    landmark_std_px: float = 2.0
    shape_prior: float = 1.0
    exp_prior: float = 1.0
    albedo_prior: float = 1.0
    n_shape: int | None = 40
    n_exp: int | None = None
    n_albedo: int | None = 20
    backend: str = "auto"
    landmark_fit: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)


@dataclass
class PhotometricFit:
    """Result of :func:`fit_photometric` (B images, G identity groups).

    Attributes:
        alpha_id: ``(G, K_id)`` float, identity coefficients (zero past ``n_shape``).
        beta: ``(G, K_alb)`` float, albedo coefficients (zero past ``n_albedo``).
        alpha_exp: ``(B, K_exp)`` float, expression coefficients.
        pose: ``(B, 6)`` float ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px, px/mm).
        sh: ``(B, 27)`` float SH lighting, channel-major.
        identity_shapes: ``(G, V, 3)`` float, mm, each group's neutral face.
        shapes: ``(B, V, 3)`` float, mm, identity + expression per image.
        photo_rmse: ``(B,)`` float, RMS colour error over the fitted face pixels (per channel).
        residual_px: ``(B,)`` float, px, RMS landmark error.
        group_index: ``(B,)`` long, row of ``alpha_id`` of each image.
        group_labels: ``(G,)`` long, the label of each group.
        losses: ``{"total", "photo", "landmark", "prior"}`` -> list of floats, one per step.
        init: the :class:`LandmarkFit` the refinement started from.
    """

    alpha_id: torch.Tensor
    beta: torch.Tensor
    alpha_exp: torch.Tensor
    pose: torch.Tensor
    sh: torch.Tensor
    identity_shapes: torch.Tensor
    shapes: torch.Tensor
    photo_rmse: torch.Tensor
    residual_px: torch.Tensor
    group_index: torch.Tensor
    group_labels: torch.Tensor
    losses: dict = field(repr=False)
    init: LandmarkFit | None = field(default=None, repr=False)


def identity_rmse(fitted: torch.Tensor, truth: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> torch.Tensor:
    """RMS vertex distance between fitted and true shapes, in the model frame (no alignment).

    Args:
        fitted: ``(B, V, 3)`` float, mm.
        truth: ``(B, V, 3)`` float, mm.
        vertex_mask: ``(V,)`` bool or None: only these vertices (e.g. ``model.face_mask``).

    Returns:
        ``(B,)`` float, mm.

    >>> identity_rmse(torch.zeros(1, 2, 3), torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]]))
    tensor([3.5355])
    """
    check_tensor(fitted, "fitted", ("B", "V", 3))
    check_tensor(truth, "truth", tuple(fitted.shape))
    d2 = ((fitted - truth) ** 2).sum(-1)
    if vertex_mask is not None:
        check_tensor(vertex_mask, "vertex_mask", (fitted.shape[1],), dtype_kind=None)
        d2 = d2[:, vertex_mask.to(fitted.device).bool()]
    return d2.mean(-1).sqrt()


# ------------------------------------------------------------------ helpers
def _resolve(config: PhotometricFitConfig | None, options: dict) -> PhotometricFitConfig:
    cfg = with_options(config, PhotometricFitConfig, options, "fit_photometric")
    check_nonnegative_int(cfg.n_steps, "n_steps")
    for name in ("lr_coeff", "lr_angle", "lr_trans", "lr_log_scale", "lr_sh", "landmark_std_px"):
        check_positive(getattr(cfg, name), name)
    for name in ("photo_weight", "shape_prior", "exp_prior", "albedo_prior"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name}: must be >= 0, got {getattr(cfg, name)}")
    return cfg


def _face_region(frags, face_mask: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` float: covered pixels whose triangle lies in the model's face region."""
    B = frags.pix_to_face.shape[0]
    attr = face_mask.to(frags.bary.dtype)[None, :, None].expand(B, -1, 1)
    inside = interpolate(frags, attr, faces)[..., 0] > FACE_REGION_THRESHOLD
    return (inside & frags.mask).to(frags.bary.dtype)[:, None]


def _fit_sh(images: torch.Tensor, albedo_px: torch.Tensor, normals: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Closed-form SH: per image and channel, least squares ``image ~ albedo * (Y(n) . l)``.

    ``images, albedo_px, normals: (B, 3, H, W)``, ``weight: (B, 1, H, W)`` -> ``(B, 27)``.
    """
    Y = sh_basis(normals.permute(0, 2, 3, 1)).flatten(1, 2)  # (B, P, 9)
    w = weight.flatten(1)[..., None]  # (B, P, 1)
    rows = []
    for c in range(3):
        A = albedo_px[:, c].flatten(1)[..., None] * Y  # (B, P, 9)
        AtA = (A * w).transpose(1, 2) @ A
        ridge = SH_RIDGE * AtA.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(MIN_STD)
        AtA = AtA + ridge[:, None, None] * torch.eye(9, dtype=A.dtype, device=A.device)
        Atb = (A * w).transpose(1, 2) @ images[:, c].flatten(1)[..., None]
        rows.append(torch.linalg.solve(AtA, Atb)[..., 0])
    return torch.cat(rows, dim=1)  # channel-major, as facelab.render.sh


def _check_inputs(model, images, landmarks2d, masks, init):
    if not isinstance(model, MorphableModel):
        raise TypeError(f"model: expected a MorphableModel, got {type(model).__name__}")
    if model.n_albedo == 0:
        raise ValueError("model: has no albedo basis; photometric fitting needs one")
    check_tensor(images, "images", ("B", 3, "H", "W"))
    B = images.shape[0]
    check_tensor(landmarks2d, "landmarks2d", (B, N_LANDMARKS, 2))
    if masks is not None:
        check_tensor(masks, "masks", (B, 1, images.shape[2], images.shape[3]))
    if init is not None and not isinstance(init, LandmarkFit):
        raise TypeError(f"init: expected a LandmarkFit or None, got {type(init).__name__}")
    if init is not None and init.pose.shape[0] != B:
        raise ValueError(f"init: fitted {init.pose.shape[0]} images, but images has {B}")


# ------------------------------------------------------------------ the fit
def fit_photometric(
    model: MorphableModel,
    images: torch.Tensor,
    landmarks2d: torch.Tensor,
    groups: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    init: LandmarkFit | None = None,
    config: PhotometricFitConfig | None = None,
    **options,
) -> PhotometricFit:
    """Fit identity + albedo per group and expression, pose, SH light per image to photos.

    Analysis by synthesis: landmark fit, closed-form lighting, then Adam on the masked
    photometric error + landmark error + Gaussian priors (module docstring;
    ``book/04_fitting.ipynb``).

    Args:
        model: a :class:`MorphableModel` with an iBUG-68 annotation and an albedo basis; with a
            partial one (``-1`` = unmapped) the landmark term uses the mapped points only.
        images: ``(B, 3, H, W)`` float RGB in [0, 1].
        landmarks2d: ``(B, 68, 2)`` float, px (x right, y down).
        groups: ``(B,)`` integer identity labels (images with equal labels share
            ``alpha_id`` and ``beta``), or None (every image its own identity).
        masks: ``(B, 1, H, W)`` float in [0, 1] or None: 1 where an occluder hides the
            face; those pixels are left out of the photometric term.
        init: a :class:`LandmarkFit` of the same images and groups, or None (computed).
        config: a :class:`PhotometricFitConfig`; ``**options`` override its fields.

    Returns:
        :class:`PhotometricFit`.

    >>> from facelab.data import make_suite
    >>> suite = make_suite("webface", n_identities=1, images_per_identity=2, image_size=32, resolution="quick")
    >>> b = suite.batch(torch.arange(2))
    >>> fit = fit_photometric(suite.model, b["image"], b["landmarks2d"], b["label"], n_steps=2)
    >>> fit.alpha_id.shape[0], fit.sh.shape, len(fit.losses["total"])
    (1, torch.Size([2, 27]), 2)
    """
    _check_inputs(model, images, landmarks2d, masks, init)
    cfg = _resolve(config, options)
    B, _, H, W = images.shape
    dev, dt = images.device, images.dtype
    labels, group_index = group_index_of(groups, B, dev)
    G = labels.shape[0]
    k_id = leading_components(cfg.n_shape, model.n_shape, "n_shape", at_most=True)
    k_exp = leading_components(cfg.n_exp, model.n_exp, "n_exp", at_most=True)
    k_alb = leading_components(cfg.n_albedo, model.n_albedo, "n_albedo", at_most=True)
    m = model.to(dev, dt)

    if init is None:
        lm_cfg = dataclasses.replace(cfg.landmark_fit, n_shape=k_id, n_exp=k_exp, landmark_std_px=cfg.landmark_std_px)
        init = fit_landmarks(m, landmarks2d, groups, config=lm_cfg)
    elif init.alpha_id.shape[0] != G:
        raise ValueError(f"init: has {init.alpha_id.shape[0]} identity groups, but groups has {G}")

    std_id = m.shape_std[:k_id].clamp_min(MIN_STD)
    std_exp = m.exp_std[:k_exp].clamp_min(MIN_STD)
    std_alb = m.albedo_std[:k_alb].clamp_min(MIN_STD)
    a_id = (init.alpha_id[:, :k_id].to(dev, dt) / std_id).clone().requires_grad_(True)
    a_exp = (init.alpha_exp[:, :k_exp].to(dev, dt) / std_exp).clone().requires_grad_(True)
    b_alb = torch.zeros(G, k_alb, dtype=dt, device=dev, requires_grad=True)
    angles = init.pose[:, :3].to(dev, dt).clone().requires_grad_(True)
    trans = init.pose[:, 3:5].to(dev, dt).clone().requires_grad_(True)
    log_scale = init.pose[:, 5:6].to(dev, dt).log().clone().requires_grad_(True)

    settings = RenderSettings(image_size=(H, W), backend=cfg.backend)
    # a partial annotation (-1 = unmapped) contributes its mapped points only, as in fit_landmarks
    mapped = m.landmark_mask.to(dev)
    faces, lm_idx, lm_target = m.faces.to(dev), m.landmarks.to(dev)[mapped], landmarks2d[:, mapped]
    visible = torch.ones_like(images[:, :1]) if masks is None else (1 - masks.to(dt)).clamp(0, 1)
    shape_basis, exp_basis, alb_basis = m.shape_basis[:, :k_id], m.exp_basis[:, :k_exp], m.albedo_basis[:, :k_alb]

    def geometry():
        offs = ((a_id * std_id) @ shape_basis.T).reshape(G, -1, 3)
        identity = m.mean_shape + offs
        verts = identity[group_index] + ((a_exp * std_exp) @ exp_basis.T).reshape(B, -1, 3)
        albedo = m.mean_albedo + ((b_alb * std_alb) @ alb_basis.T).reshape(G, -1, 3)
        pose = torch.cat([angles, trans, log_scale.exp()], dim=1)
        return identity, verts, albedo[group_index], pose

    # closed-form lighting for the landmark fit's geometry under the mean albedo
    with torch.no_grad():
        _, verts, albedo, pose = geometry()
        grey = torch.zeros(B, 27, dtype=dt, device=dev)
        probe = render(verts, faces, albedo, grey, pose, settings=settings)
        albedo_px = interpolate(probe.fragments, albedo, faces).permute(0, 3, 1, 2)
        region = _face_region(probe.fragments, m.face_mask, faces) * visible
        sh0 = _fit_sh(images, albedo_px, probe.normals, region)
    sh = sh0.clone().requires_grad_(True)

    optimiser = torch.optim.Adam([
        {"params": [a_id, a_exp, b_alb], "lr": cfg.lr_coeff},
        {"params": [angles], "lr": cfg.lr_angle},
        {"params": [trans], "lr": cfg.lr_trans},
        {"params": [log_scale], "lr": cfg.lr_log_scale},
        {"params": [sh], "lr": cfg.lr_sh},
    ])
    losses = {"total": [], "photo": [], "landmark": [], "prior": []}

    def objective():
        identity, verts, albedo, pose = geometry()
        out = render(verts, faces, albedo, sh, pose, landmarks_idx=lm_idx, settings=settings)
        weight = _face_region(out.fragments, m.face_mask, faces) * visible
        sq = ((out.image - images) ** 2).sum(1, keepdim=True) * weight
        photo = sq.flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)  # (B,)
        lm_sq = ((out.landmarks2d - lm_target) ** 2).sum((1, 2))  # (B,)
        prior = (cfg.shape_prior * (a_id ** 2).sum() + cfg.albedo_prior * (b_alb ** 2).sum()
                 + cfg.exp_prior * (a_exp ** 2).sum())
        parts = (cfg.photo_weight * photo.sum(), lm_sq.sum() / cfg.landmark_std_px ** 2, prior)
        return parts, photo, lm_sq, identity, verts

    for _ in range(cfg.n_steps):
        optimiser.zero_grad()
        (photo_t, lm_t, prior_t), *_ = objective()
        total = photo_t + lm_t + prior_t
        total.backward()  # a sum over images, so that each image's steps do not depend on the batch
        optimiser.step()
        total = total / B
        for key, value in zip(("total", "photo", "landmark", "prior"), (total, photo_t / B, lm_t / B, prior_t / B)):
            losses[key].append(float(value.detach()))

    with torch.no_grad():
        _, photo, lm_sq, identity, verts = objective()
        _, _, _, pose = geometry()
    full_id = torch.zeros(G, m.n_shape, dtype=dt, device=dev)
    full_id[:, :k_id] = a_id.detach() * std_id
    full_exp = torch.zeros(B, m.n_exp, dtype=dt, device=dev)
    full_exp[:, :k_exp] = a_exp.detach() * std_exp
    full_alb = torch.zeros(G, m.n_albedo, dtype=dt, device=dev)
    full_alb[:, :k_alb] = b_alb.detach() * std_alb
    return PhotometricFit(
        alpha_id=full_id, beta=full_alb, alpha_exp=full_exp, pose=pose.detach(), sh=sh.detach(),
        identity_shapes=identity.detach(), shapes=verts.detach(), photo_rmse=(photo / 3).sqrt(),
        residual_px=(lm_sq / lm_idx.shape[0]).sqrt(), group_index=group_index, group_labels=labels,
        losses=losses, init=init,
    )


# ------------------------------------------------- collections: training targets and the study
#: suites ``facelab fit`` generates itself (several photos per identity); others are fitted from a saved folder
FIT_SUITES = ("webface", "collections", "lp")
#: fields of :class:`CollectionFitConfig` that describe the suite to generate (not used for a given collection)
SUITE_FIELDS = ("profile", "suite", "n_identities", "images_per_identity", "image_size", "resolution", "seed")
#: per-image quantities of a fit kept in the targets (collection order)
_PER_IMAGE = ("alpha_exp", "pose", "sh", "photo_rmse", "residual_px")
_METRIC = "identity-shape RMSE over the face region, mm, model frame, vs the true neutral shape"


@dataclass
class CollectionFitConfig:
    """``facelab fit``: multi-image training targets of a collection, and the single- vs multi-image study.

    Attributes:
        profile: ``"quick"`` (small suite, CPU minutes) or ``"full"`` (the suite's own size).
        suite: the suite :func:`fit_collection_study` generates, one of :data:`FIT_SUITES`.
        n_identities: subjects (0 = the profile's default).
        images_per_identity: photos per subject (0 = the profile's default; the study
            uses the first 1, 2, 4, 8 of them that exist).
        image_size: px.
        resolution: morphable-model resolution (``quick``, ``default``, ``large``).
        morphable: photos in identity folders only: a morphable-model file (any
            :func:`facelab.io.load_morphable` reads: ``.npz``, BFM, SFM, FLAME, ...; it needs an albedo
            basis) fitted instead of SynthFaces at ``resolution``; the targets record its path and
            content hash (:func:`facelab.fitting.save_fitted_targets`). A model with a partial iBUG-68
            annotation (``-1`` entries) is fitted on its mapped points. None: SynthFaces. Generated
            and saved suites refuse it (their true shapes are SynthFaces').
        seed: suite seed.
        n_steps: Adam steps of :func:`fit_photometric`.
        n_shape, n_albedo: leading components fitted.
        batch_identities: subjects fitted together in one batch.

    :func:`fit_collection` fits a given collection and uses only ``n_steps``, ``n_shape``,
    ``n_albedo``, ``batch_identities`` and for a folder of photos ``resolution`` or ``morphable``
    (the others, :data:`SUITE_FIELDS`, describe a suite to generate).

    >>> CollectionFitConfig().morphable is None
    True
    """

    profile: str = "quick"
    suite: str = "webface"
    n_identities: int = 0
    images_per_identity: int = 0
    image_size: int = 64
    resolution: str = "quick"
    morphable: str | None = None
    seed: int = 0
    n_steps: int = 60
    n_shape: int = 40
    n_albedo: int = 20
    batch_identities: int = 16

    def __post_init__(self) -> None:
        if self.profile not in PROFILE_DEFAULTS:
            raise ValueError(f"profile: expected one of {sorted(PROFILE_DEFAULTS)}, got {self.profile!r}")
        check_choice(self.suite, "suite", FIT_SUITES)
        defaults = PROFILE_DEFAULTS[self.profile]
        if not defaults:
            from facelab.data.suites import PROFILE_SIZES

            defaults = {k: PROFILE_SIZES["full"][self.suite][k] for k in ("n_identities", "images_per_identity")}
        for key, value in defaults.items():
            if getattr(self, key) == 0:
                setattr(self, key, value)
        check_positive(self.n_identities, "n_identities", integer=True)
        check_positive(self.images_per_identity, "images_per_identity", integer=True)
        check_positive(self.batch_identities, "batch_identities", integer=True)
        check_nonnegative_int(self.n_steps, "n_steps")
        if self.morphable is not None:
            if not isinstance(self.morphable, (str, os.PathLike)) or not str(self.morphable):
                raise ValueError(f"morphable: expected the path of a morphable-model file or None, got {self.morphable!r}")
            self.morphable = str(self.morphable)


#: suite sizes of ``facelab fit SUITE`` per profile (full, empty: the suite's own, :data:`facelab.data.suites.PROFILE_SIZES`)
PROFILE_DEFAULTS = {
    "quick": dict(n_identities=16, images_per_identity=8),
    "full": {},
}


def _subject_images(labels: torch.Tensor) -> list[torch.Tensor]:
    """Per identity label present (ascending), the indices of its images in collection order."""
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    return list(torch.split(order, counts.tolist()))


def _fit_chunks(view, subjects: list[torch.Tensor], n: int | None, grouped: bool, cfg: CollectionFitConfig):
    """Fit the first ``n`` images (None: all) of every subject, ``cfg.batch_identities`` subjects per batch.

    Yields ``(first, index, fit)``: the chunk's first subject, its image indices (subject-major)
    and the :class:`PhotometricFit` (one group per subject if ``grouped``, else per image).
    """
    for first in range(0, len(subjects), cfg.batch_identities):
        index = torch.cat([s[:n] for s in subjects[first:first + cfg.batch_identities]])
        batch = view.batch(index)
        fit = fit_photometric(
            view.model, batch["image"], batch["landmarks2d"], batch["label"] if grouped else None,
            masks=batch.get("occlusion_mask"), n_steps=cfg.n_steps, n_shape=cfg.n_shape, n_albedo=cfg.n_albedo,
        )
        yield first, index, fit


def _fit_all_images(view, subjects: list[torch.Tensor], n: int | None, cfg: CollectionFitConfig, say) -> dict:
    """Multi-image fits of the first ``n`` images (None: all) of every subject, merged over chunks.

    Returns per-subject ``alpha_id, beta, identity_labels, err`` (face-region identity RMSE, mm;
    left out for a folder of photos, which has no true shapes), and per-image ``index`` plus
    :data:`_PER_IMAGE` rows in the order of ``index``.
    """
    parts = {k: [] for k in ("alpha_id", "beta", "identity_labels", "index") + _PER_IMAGE}
    if view.has_truth:
        parts["err"] = []
    face = view.model.face_mask
    for first, index, fit in _fit_chunks(view, subjects, n, True, cfg):
        if view.has_truth:
            # the group rows follow the sorted labels, as the subjects of the chunk
            firsts = torch.cumsum(torch.bincount(fit.group_index, minlength=fit.group_labels.shape[0]), 0)
            firsts = torch.cat([firsts.new_zeros(1), firsts[:-1]])
            truth = view.truth(view.identity[index[firsts.cpu()]])
            parts["err"].append(identity_rmse(fit.identity_shapes, truth, face))
        for key in ("alpha_id", "beta", *_PER_IMAGE):
            parts[key].append(getattr(fit, key))
        parts["identity_labels"].append(fit.group_labels)
        parts["index"].append(index)
        done = min(first + cfg.batch_identities, len(subjects))
        say(f"multi-image fits, {n or 'all'} per subject: {done}/{len(subjects)} subjects")
    return {k: torch.cat([v.detach().cpu() for v in vs]) for k, vs in parts.items()}


def _folder_model(cfg: CollectionFitConfig) -> tuple[MorphableModel | None, dict | None]:
    """``(model, record)`` of ``cfg.morphable`` (:func:`facelab.io.load_morphable`), or ``(None, None)``."""
    if cfg.morphable is None:
        return None, None
    from facelab.io.models import load_morphable
    from facelab.models.morphable_record import morphable_record

    model = load_morphable(cfg.morphable)
    if model.n_albedo == 0:
        raise ValueError(f"morphable: {cfg.morphable} has no albedo basis; the photometric fit of `facelab fit` needs one")
    return model, morphable_record(model, cfg.morphable)


def _targets(view, merged: dict) -> dict:
    """The ``targets`` dict of :func:`facelab.fitting.save_fitted_targets`: per-image rows in collection order."""
    n = len(view)
    if merged["index"].shape[0] != n:
        raise ValueError(f"{view.name}: fitted {merged['index'].shape[0]} of its {n} images")
    targets = {k: merged[k] for k in ("alpha_id", "beta", "identity_labels")}
    for key in _PER_IMAGE:
        rows = torch.zeros((n,) + tuple(merged[key].shape[1:]), dtype=merged[key].dtype)
        rows[merged["index"]] = merged[key]
        targets[key] = rows
    targets["labels"] = view.labels.clone()
    targets["identity"] = view.identity.clone()
    targets["suite_config"] = json.dumps(view.config)
    return targets


def fit_collection(collection, cfg: CollectionFitConfig | None = None, progress=None) -> tuple[dict, dict]:
    """Fit every identity of a collection to all its photos jointly: Liu et al.'s training targets.

    Each subject gets one identity shape and albedo, each photo its expression, pose and light
    (:func:`fit_photometric` with ``groups`` = the identity labels), ``cfg.batch_identities``
    subjects per batch. Works for any suite (``micc``, ``bu3dfe``, ... saved with ``facelab synth``)
    and for photos in one folder per identity with a landmarks sidecar; ``n_steps=0`` keeps the
    landmark fit alone (:func:`facelab.fitting.fit_landmarks`, identity shared per subject).

    Args:
        collection: a :class:`~facelab.data.PhotoCollection`, :class:`~facelab.data.SavedCollection`
            or :class:`~facelab.data.ImageFolderIdentities`.
        cfg: uses ``n_steps``, ``n_shape``, ``n_albedo``, ``batch_identities``, and for an image
            folder ``morphable`` (a model file) or else ``resolution`` (the SynthFaces model fitted)
            (default :class:`CollectionFitConfig`).
        progress: None or a callable taking a progress message (str).

    Returns:
        ``(targets, report)``: ``targets`` for :func:`facelab.fitting.save_fitted_targets`
        (``alpha_id (G, K_id)``, ``beta (G, K_alb)``, ``identity_labels (G,)``; per image in
        collection order ``alpha_exp (N, K_exp)``, ``pose (N, 6)``, ``sh (N, 27)``, ``photo_rmse (N,)``,
        ``residual_px (N,)`` px, ``labels (N,)``, ``identity (N,)``; ``suite_config`` JSON str; with
        ``cfg.morphable`` also ``morphable``, the model file's record: path and content sha256);
        ``report`` a JSON-ready dict with ``identity_rmse_mm`` (mean face-region RMSE of the
        fitted vs the true neutral shape, mm; None for a folder of photos), counts, fit
        settings and timings.

    Raises:
        ValueError: every identity has a single image (nothing to fit jointly), an image
            folder has no landmarks, or ``cfg.morphable`` is given for a suite (their truth is SynthFaces)
            or names a model without an albedo basis.
        FileNotFoundError: ``cfg.morphable`` names no file.

    >>> from facelab.data import make_suite
    >>> suite = make_suite("webface", n_identities=2, images_per_identity=2, image_size=32, resolution="quick")
    >>> targets, report = fit_collection(suite, CollectionFitConfig(n_steps=1))
    >>> targets["alpha_id"].shape[0], targets["alpha_exp"].shape[0], report["n_identities"]
    (2, 4, 2)
    """
    from facelab.fitting.targets import CollectionView

    cfg = cfg if cfg is not None else CollectionFitConfig()
    if not isinstance(cfg, CollectionFitConfig):
        raise TypeError(f"cfg: expected a CollectionFitConfig or None, got {type(cfg).__name__}")
    from facelab.data import ImageFolderIdentities

    if cfg.morphable is not None and not isinstance(collection, ImageFolderIdentities):
        raise ValueError(f"morphable: {getattr(collection, 'root', None) or 'a generated suite'} is fitted with its "
                         "own SynthFaces model (its true shapes are SynthFaces'); another morphable model applies "
                         "to photos in identity folders only")
    model, record = _folder_model(cfg)
    view = CollectionView(collection, resolution=cfg.resolution, model=model)
    view.require_landmarks("multi-image fitting")
    subjects = _subject_images(view.labels)
    counts = torch.tensor([s.shape[0] for s in subjects])
    if int(counts.max()) < 2:
        raise ValueError(f"{view.name}: every identity has a single image; multi-image fitting needs several per identity")
    say = progress or (lambda msg: None)
    start = time.perf_counter()
    merged = _fit_all_images(view, subjects, None, cfg, say)
    report = {
        "source": view.name, "suite": view.config.get("suite"), "n_images": len(view), "n_identities": len(subjects),
        "images_per_identity": {"min": int(counts.min()), "mean": float(counts.float().mean()), "max": int(counts.max())},
        "image_size": view.config.get("image_size"), "resolution": view.config.get("resolution"),
        "n_steps": cfg.n_steps, "n_shape": cfg.n_shape, "n_albedo": cfg.n_albedo,
        "metric": _METRIC if view.has_truth else "none: a folder of photos holds no true shapes",
        "identity_rmse_mm": float(merged["err"].mean()) if view.has_truth else None,
        "landmark_rmse_px": float(merged["residual_px"].mean()), "photo_rmse": float(merged["photo_rmse"].mean()),
        "timings_s": {"fit_s": time.perf_counter() - start},
    }
    targets = _targets(view, merged)
    if record is not None:
        report["morphable"] = targets["morphable"] = record
    return targets, report


def fit_collection_study(cfg: CollectionFitConfig, progress=None) -> tuple[dict, dict]:
    """Fit a generated suite per identity (all its photos jointly) and measure identity-shape error.

    Builds ``cfg.suite`` (``webface`` by default) at the config's size. Returns
    ``(targets, report)``: ``targets`` as :func:`fit_collection` (all photos of each subject;
    write with :func:`facelab.fitting.save_fitted_targets`); ``report`` holds the face-region
    identity RMSE (mm, no alignment, vs the true neutral shape) of the targets
    (``identity_rmse_mm``) and of single-image and multi-image fits for 1, 2, 4, 8 images
    per subject (those that fit in ``images_per_identity``), and timings.

    >>> cfg = CollectionFitConfig(n_identities=1, images_per_identity=2, image_size=32, n_steps=1)
    >>> targets, report = fit_collection_study(cfg)
    >>> targets["alpha_id"].shape[0], [row["images_per_subject"] for row in report["study"]]
    (1, [1, 2])
    """
    from facelab.data import make_suite
    from facelab.fitting.targets import CollectionView

    if cfg.morphable is not None:
        raise ValueError(f"morphable: the generated suite {cfg.suite!r} is fitted with its own SynthFaces model (its "
                         "true shapes are SynthFaces'); another morphable model applies to photos in identity folders "
                         "only (`facelab synth SUITE --format imagefolder --out ROOT`, then `facelab fit ROOT`)")
    suite = make_suite(cfg.suite, n_identities=cfg.n_identities, images_per_identity=cfg.images_per_identity,
                       image_size=cfg.image_size, resolution=cfg.resolution, seed=cfg.seed)
    view = CollectionView(suite)
    subjects = _subject_images(view.labels)
    N, M = len(subjects), min(s.shape[0] for s in subjects)
    counts = [n for n in STUDY_IMAGES_PER_SUBJECT if n <= M]
    face = suite.model.face_mask
    timings = {}
    say = progress or (lambda msg: None)

    # single-image fits of every study image (independent of how many images a subject has)
    start = time.perf_counter()
    single_err = torch.zeros(N, counts[-1])
    single_alpha = torch.zeros(N, counts[-1], suite.model.n_shape)
    for first, index, fit in _fit_chunks(view, subjects, counts[-1], False, cfg):
        rows = slice(first, first + index.shape[0] // counts[-1])
        err = identity_rmse(fit.identity_shapes, view.truth(view.identity[index]), face)
        single_err[rows] = err.float().cpu().reshape(-1, counts[-1])
        single_alpha[rows] = fit.alpha_id.float().cpu().reshape(-1, counts[-1], suite.model.n_shape)
        say(f"single-image fits: {rows.stop * counts[-1]}/{N * counts[-1]} images")
    timings["single_s"] = time.perf_counter() - start

    truth = view.truth(view.identity[torch.stack([s[0] for s in subjects])])
    study, targets, everything = [], None, all(s.shape[0] == M for s in subjects)
    for n in sorted(set(counts) | {M}, reverse=True):
        start = time.perf_counter()
        merged = _fit_all_images(view, subjects, n, cfg, say)
        timings[f"multi_{n}_s"] = time.perf_counter() - start
        if n == M and everything:
            targets, identity_err = _targets(view, merged), merged["err"]
        if n in counts:
            mean_alpha = single_alpha[:, :n].mean(1)
            averaged = identity_rmse(suite.model.shape(mean_alpha.to(suite.model.dtype)), truth, face)
            study.append({
                "images_per_subject": n,
                "single_image_rmse_mm": float(single_err[:, :n].mean()),
                "single_image_averaged_rmse_mm": float(averaged.mean()),
                "multi_image_rmse_mm": float(merged["err"].mean()),
            })
    if targets is None:  # subjects with different photo counts: the targets use all of each one's photos
        start = time.perf_counter()
        merged = _fit_all_images(view, subjects, None, cfg, say)
        timings["multi_all_s"] = time.perf_counter() - start
        targets, identity_err = _targets(view, merged), merged["err"]
    study.sort(key=lambda row: row["images_per_subject"])
    report = {
        "suite": cfg.suite, "n_identities": N, "images_per_identity": M, "image_size": cfg.image_size,
        "resolution": cfg.resolution, "n_steps": cfg.n_steps, "n_shape": cfg.n_shape, "n_albedo": cfg.n_albedo,
        "metric": _METRIC, "identity_rmse_mm": float(identity_err.mean()),
        "study": study, "timings_s": timings, "suite_config": view.config,
    }
    return targets, report
