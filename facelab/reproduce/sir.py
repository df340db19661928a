"""Reproduce the SIR / Sphere Face Model comparison on SynthFaces: ``facelab reproduce sir``.

Book chapter: ``book/10_sir.ipynb``. :func:`reproduce_sir` trains (or reuses) the stages of
:mod:`facelab.train.sir` and scores four rows:

=====================================  ==========================================================
row                                    model
=====================================  ==========================================================
``Liu et al. c_Id``                    Phase III of ``facelab reproduce liu2018`` (its ``c_Id``
                                       is the embedding, its identity decoder the shape)
``shape params + recognition (no SIR)``  ``params_recog.pt``: CosFace on the standardised
                                       shape coefficients ``a`` of a linear 3DMM regressor
``+ SIR loss``                         ``params_recog_sir.pt``: the same plus the SIR loss
``SFM + SIR``                          ``sfm_sir.pt``: Sphere Face Model basis + SIR loss
=====================================  ==========================================================

Columns (facelab's definitions; the papers are available only as abstracts):

* ``rmse_micc``: MICC-style point-to-plane error (mm), "average over identity", all
  conditions (:mod:`facelab.metrics.model_eval`, quick: 5 subjects);
* ``lfw_accuracy``: LFW-protocol verification accuracy of the shape parameters (the
  embedding: ``a`` / ``c_Id``; cosine);
* ``sir_ratio``: :func:`facelab.metrics.sir.sir_ratio` of the reconstructed *identity*
  (neutral) shapes of every frame of a held-out ``micc``-style suite with
  :data:`QUICK_SIR_IDENTITIES` subjects (rigid alignment, face region): mean
  intra-identity over mean inter-identity shape distance, lower is better;
* ``geo_rank1``: :func:`facelab.metrics.sir.geometric_rank1` of those reconstructions
  against a **reconstructed** gallery: probes are the identity shapes of the indoor and
  outdoor frames, each subject's reference is the identity shape reconstructed from the
  most frontal frame of its cooperative video (can the *reconstructed* faces be told apart?);
* ``geo_rank1_truth``: every frame's identity shape against each subject's **true**
  neutral shape (needs the reconstructions to be right, not only distinct);
* ``param_rank1``: rank-1 identification in *parameter* space with the same gallery and
  probes (cosine of the embeddings): recognition in parameter space, to set against the
  geometric rank-1 (the SIR paper's question);
* ``intra_mm``, ``inter_mm``: the two means of the ratio.

``sfm_vs_pca``: :func:`facelab.metrics.shape_models.sfm_vs_pca` at equal dimension ``K`` (10, 20,
40 and the recipe's SFM dimension) on held-out 3D shapes (:func:`facelab.train.sir.sfm_shapes`):
representation RMSE and identity clustering (k-means NMI, verification accuracy) of the
parameters, one dict per ``K``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab.checks import check_choice, check_positive
from facelab.config import torch_threads
from facelab.metrics.model_eval import RenderedSuite
from facelab.models.registry import load_evaluable
from facelab.reproduce.liu2018 import liu_reference

PROFILES = ("quick", "standard", "full")
#: training seeds per profile; seed 0 trains in the run folder, seed k in ``seed<k>/``
PROFILE_SEEDS = {"quick": (0,), "standard": (0, 1, 2), "full": (0,)}
MEAN_FACE_ROW = "mean face"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
LIU_ROW = "Liu et al. c_Id"
ROW_NAMES = {"params_recog": "shape params + recognition (no SIR)", "params_recog_sir": "+ SIR loss",
             "sfm_sir": "SFM + SIR"}
COLUMNS = ("rmse_micc", "lfw_accuracy", "sir_ratio", "geo_rank1", "geo_rank1_truth", "param_rank1",
           "intra_mm", "inter_mm")
SIR_MAX_PAIRS = 5_000  # intra / inter pairs of the ratio, each (sampled with the seed beyond this)
OVERRIDE_GROUPS = ("train", "eval", "sir")
#: SIR-metric suite sizes (micc-style subjects; frames per video come from the suite profile;
#: ``standard`` uses the quick sizes, its power comes from three seeds and the 30-subject MICC suite)
QUICK_SIR_IDENTITIES = 40
FULL_SIR_IDENTITIES = 200
QUICK_SIR_FRAMES = 4  # per video (3 videos per subject)
GALLERY_CONDITION = 0  # cooperative video: the gallery frame is its most frontal one
#: held-out 3D identities of the SFM-vs-PCA comparison
SFM_TABLE_K = (10, 20, 40)  # SFM-vs-PCA dimensions besides the recipe's own
QUICK_SFM_TEST_IDENTITIES = 60
FULL_SFM_TEST_IDENTITIES = 300


@dataclass
class SIREvalConfig:
    """Options of the SIR-metric columns. Zero means the profile's default.

    Attributes:
        identities: subjects of the ``micc``-style SIR suite (quick and standard 40, full 200).
        frames_per_video: frames per video (0: quick and standard 4, full the suite profile's).
        seed: seed of the suite. batch_size: images per forward pass.
        align: alignment of :func:`~facelab.metrics.sir.sir_ratio` (``"rigid"``).
        sfm_test_identities: held-out identities of ``sfm_vs_pca`` (quick and standard 60, full 300).
        sfm_k: the dimensions of the SFM-vs-PCA table, besides the recipe's SFM dimension.
        num_threads: torch CPU threads while scoring (-1: leave; 0: quick 1).
    """

    identities: int = 0
    frames_per_video: int = 0
    seed: int = 0
    batch_size: int = 64
    align: str = "rigid"
    sfm_test_identities: int = 0
    sfm_k: tuple[int, ...] = SFM_TABLE_K
    num_threads: int = 0

    def resolved(self, profile: str) -> "SIREvalConfig":
        """A copy with the profile's defaults filled in."""
        check_choice(profile, "profile", PROFILES)
        quick = profile != "full"  # standard scores on the quick SIR suite sizes
        check_positive(self.batch_size, "batch_size", integer=True)
        return dataclasses.replace(
            self, identities=self.identities or (QUICK_SIR_IDENTITIES if quick else FULL_SIR_IDENTITIES),
            frames_per_video=self.frames_per_video or (QUICK_SIR_FRAMES if quick else 0),
            sfm_test_identities=self.sfm_test_identities or (QUICK_SFM_TEST_IDENTITIES if quick else FULL_SFM_TEST_IDENTITIES),
            num_threads=self.num_threads or (1 if profile == "quick" else -1))




# ------------------------------------------------------------------ scoring
def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def _cosine_rank1(probe: np.ndarray, probe_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray) -> float:
    p = probe / np.linalg.norm(probe, axis=1, keepdims=True).clip(1e-12)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean(gallery_labels[np.argmax(p @ g.T, axis=1)] == probe_labels))


def gallery_split(label: np.ndarray, condition: np.ndarray, yaw_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gallery, probes)`` image indices of a ``micc``-style suite.

    Gallery: per subject, the most frontal frame of the cooperative video; probes: every frame
    of the other videos (indoor, outdoor).

    >>> g, p = gallery_split(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 0, 0, 1]),
    ...                      np.array([-20.0, 5.0, 0.0, 3.0, 30.0, 0.0]))
    >>> g.tolist(), p.tolist()
    ([1, 3], [2, 5])
    """
    gallery = []
    for lab in np.unique(label):
        coop = np.flatnonzero((label == lab) & (condition == GALLERY_CONDITION))
        if coop.size == 0:
            raise ValueError(f"label: subject {lab} has no cooperative frame for the gallery")
        gallery.append(coop[np.argmin(np.abs(yaw_deg[coop]))])
    return np.array(gallery), np.flatnonzero(condition != GALLERY_CONDITION)


def score_sir(pred: dict, mask: np.ndarray, align: str = "rigid", max_pairs: int = SIR_MAX_PAIRS,
              seed: int = 0, units: dict | None = None) -> dict[str, float]:
    """The SIR-metric columns of one model from its :func:`~facelab.metrics.model_eval.predict_suite`
    output on a ``micc``-style suite (``identity_shape (N, V, 3)`` mm, ``embedding (N, D)``,
    ``gt_identity``, ``label``, ``condition``, ``yaw_deg``); see the module docstring.

    Args:
        mask: ``(V,)`` bool, the vertices compared (the face region).
        align: ``"rigid"``, ``"similarity"`` or ``"none"``.
        max_pairs: intra / inter pairs drawn for the ratio (each kind), with ``seed``.
        units: a dict to fill with per-subject ``sir_ratio``
            (:func:`~facelab.metrics.sir.sir_ratio_per_identity`) and ``geo_rank1`` (each
            subject's share of identified probes), the units of a paired bootstrap.

    Returns:
        ``{"sir_ratio", "geo_rank1", "geo_rank1_truth", "param_rank1", "intra_mm", "inter_mm"}``;
        ``sir_ratio = intra_mm / inter_mm`` is exactly :func:`facelab.metrics.sir.sir_ratio` with
        the same ``max_pairs`` and ``seed``.
    """
    from facelab.metrics.sir import geometric_rank1, sir_ratio, sir_ratio_per_identity

    shapes = _np(pred["identity_shape"])[:, mask]
    label = pred["label"].long().numpy()
    cond = pred["condition"].long().numpy()
    emb = _np(pred["embedding"])
    try:
        ratio = sir_ratio(shapes, label, align=align, max_pairs=max_pairs, seed=seed, return_parts=True)
    except ValueError as err:
        raise ValueError(f"pred: the SIR suite needs two identities and two frames of one identity ({err})") from None
    first = np.array([np.flatnonzero(label == lab)[0] for lab in np.unique(label)])
    truth = _np(pred["gt_identity"])[first][:, mask]
    gallery, probes = gallery_split(label, cond, _np(pred["yaw_deg"]))
    hits = geometric_rank1(shapes[probes], label[probes], shapes[gallery], label[gallery], align=align, return_hits=True)
    if units is not None:  # per subject: the units of a paired bootstrap
        units["sir_ratio"] = sir_ratio_per_identity(shapes, label, align=align, seed=seed)
        units["geo_rank1"] = np.array([hits[label[probes] == k].mean() for k in np.unique(label[probes])])
    return {
        "sir_ratio": ratio["ratio"],
        "geo_rank1": float(np.mean(hits)),
        "geo_rank1_truth": geometric_rank1(shapes, label, truth, label[first], align=align),
        "param_rank1": _cosine_rank1(emb[probes], label[probes], emb[gallery], label[gallery]),
        "intra_mm": ratio["intra_mm"], "inter_mm": ratio["inter_mm"],
    }


class _Suites:
    """The evaluation suites (MICC protocol, LFW, SIR), rendered once per image size / mesh."""

    def __init__(self, profile: str, eval_cfg, sir_cfg: SIREvalConfig) -> None:
        self.profile, self.eval_cfg, self.sir_cfg = profile, eval_cfg.resolved(profile), sir_cfg
        self._cache: dict = {}

    def get(self, model, name: str):
        from facelab.data import make_suite

        key = (tuple(model.config.image_size), model.config.resolution, name)
        if key not in self._cache:
            cfg = self.eval_cfg
            common = dict(profile=self.profile, device=cfg.device, image_size=key[0], resolution=key[1])
            if name == "micc":
                sizes = {"n_identities": cfg.micc_identities} if cfg.micc_identities else {}
                suite = make_suite("micc", seed=cfg.seed, **common, **sizes)
            elif name == "lfw":
                sizes = {k: v for k, v in (("n_identities", cfg.lfw_identities),
                                           ("pairs_per_fold", cfg.lfw_pairs_per_fold)) if v}
                suite = make_suite("lfw", seed=cfg.seed, **common, **sizes)
            else:
                sizes = {"frames_per_video": self.sir_cfg.frames_per_video} if self.sir_cfg.frames_per_video else {}
                suite = make_suite("micc", seed=self.sir_cfg.seed, n_identities=self.sir_cfg.identities, **common, **sizes)
            self._cache[key] = RenderedSuite(suite, fields=None)  # the SIR scores read every field
        return self._cache[key]


def score_model(model, suites: _Suites, into: dict | None = None) -> dict[str, float]:
    """Every column of :data:`COLUMNS` for one evaluable model (see the module docstring).

    ``into``: a dict to fill with the model's units (``micc_mm`` and ``sir_ratio`` / ``geo_rank1``
    per subject, ``lfw_accuracy`` per pair) for :func:`sir_claims`.
    """
    from facelab.metrics.model_eval import predict_suite, score_micc
    from facelab.metrics.verification import verify

    cfg, sir_cfg = suites.eval_cfg, suites.sir_cfg
    with torch_threads(cfg.num_threads):
        micc = suites.get(model, "micc")
        micc_pred = predict_suite(model, micc, cfg.batch_size)
        micc_rows, micc_units = score_micc(model, suites.profile, cfg, suite=micc, pred=micc_pred, return_units=True)
        lfw = suites.get(model, "lfw")
        emb = _np(predict_suite(model, lfw, cfg.batch_size)["embedding"])
        pairs = lfw.table.pairs.numpy()
        verified = verify(emb[pairs[:, 0]], emb[pairs[:, 1]], lfw.table.issame.numpy(), n_folds=lfw.config.n_folds)
        sir = suites.get(model, "sir")
        units = {"micc_mm": micc_units["average_over_identity"], "lfw_accuracy": np.asarray(verified.pair_correct, float)}
        sir_cols = score_sir(predict_suite(model, sir, sir_cfg.batch_size), sir.model.face_mask.numpy(),
                             align=sir_cfg.align, seed=sir_cfg.seed, units=units)
    if into is not None:
        into.update(units)
    return {"rmse_micc": float(micc_rows["average_over_identity"]["all"]["mean"]),
            "lfw_accuracy": float(verified.accuracy_mean), **sir_cols}


# ------------------------------------------------------------------ claims
#: the claims of the SIR and SFM papers tested here: (id, text, (row A, row B), metric, better,
#: the term that must have pulled for the comparison to mean anything)
CLAIMS = (
    ("S1", "The SIR loss lowers the SIR ratio", ("params_recog_sir", "params_recog"), "sir_ratio", "lower", "sir"),
    ("S2", "The SIR loss raises geometric rank-1", ("params_recog_sir", "params_recog"), "geo_rank1", "higher", "sir"),
    ("S3", "MICC error with the SIR loss (the paper: not worse)", ("params_recog_sir", "params_recog"), "micc_mm",
     "lower", "sir"),
    ("S3b", "LFW accuracy with the SIR loss (the paper: within a point)", ("params_recog_sir", "params_recog"),
     "lfw_accuracy", "higher", "sir"),
    ("S4", "The Sphere Face Model lowers the SIR ratio further", ("sfm_sir", "params_recog_sir"), "sir_ratio", "lower",
     "sir"),
)
#: what a base model must reach before any SIR row is read: geometric rank-1 against the true
#: shapes at this multiple of chance (it identifies, not just separates), and a MICC error at most
#: this fraction of the mean face's on the same suite (it reconstructs, not just separates)
PRECONDITION_RANK1_OVER_CHANCE = 5.0
PRECONDITION_MICC_OVER_MEAN_FACE = 0.8


def sir_activity(diagnostics: dict) -> dict[str, bool]:
    """``{"sir": the SIR term pulled on the regressor in the + SIR stage}``.

    >>> sir_activity({"params_recog_sir": {"terms": {"sir": {"regressor": {"active": True}}}}})
    {'sir': True}
    """
    from facelab.metrics.stats import term_pulled

    stage = diagnostics.get("params_recog_sir", {})
    return {"sir": term_pulled(stage, "sir", "regressor", head=False)}  # the SIR term trains no head


def sir_claims(units: dict, activity: dict, n_boot: int | None = None) -> list[dict]:
    """The :data:`CLAIMS` entries with 95 % intervals (:func:`facelab.metrics.stats.claims_table`).

    ``units``: ``{stage: {metric: (n_seeds, n_units)}}`` from :func:`score_model`, one row per
    training seed (a ``(n_units,)`` array is one seed).
    """
    from facelab.metrics.stats import N_BOOTSTRAP, claims_table

    return claims_table(CLAIMS, units, {}, activity, n_boot=n_boot or N_BOOTSTRAP)


#: the SFM-vs-PCA claims at each dimension K: (id prefix, metric of sfm_vs_pca's "paired", text)
SFM_PCA_CLAIMS = (("S5a", "nmi", "SFM parameters cluster identities better than PCA's (NMI)"),
                  ("S5b", "verification_accuracy", "SFM parameters verify better than PCA's"))


def sfm_pca_claims(svp: list[dict] | None, n_seeds: int = 1) -> list[dict]:
    """Claim entries for SFM against PCA at each dimension of ``svp`` (:func:`sfm_vs_pca_table`),
    from :func:`facelab.metrics.shape_models.sfm_vs_pca`'s paired bootstrap over held-out identities.

    Each entry has the fields of a :func:`facelab.metrics.stats.claim` entry; ``id`` is the prefix
    and the dimension (``"S5a@K=10"``); ``active`` is True (a comparison of two shape models: no
    training term to check); ``n_seeds``: the training seeds of the 3D data (one table).

    >>> svp = [{"K": 10, "paired": {"nmi": {"estimate": 0.02, "ci95": [0.01, 0.03], "verdict": "holds",
    ...         "n_identities": 60}, "verification_accuracy": {"estimate": 0.0, "ci95": [-0.01, 0.01],
    ...         "verdict": "within noise", "n_identities": 60}}}]
    >>> [(c["id"], c["verdict"]) for c in sfm_pca_claims(svp)]
    [('S5a@K=10', 'holds'), ('S5b@K=10', 'within noise')]
    """
    out = []
    for row in svp or []:
        for prefix, metric, text in SFM_PCA_CLAIMS:
            paired = row.get("paired", {}).get(metric)
            if paired is None:
                continue
            out.append({"id": f"{prefix}@K={row['K']}", "text": f"{text}, K = {row['K']}",
                        "rows": [f"SFM K={row['K']}", f"PCA K={row['K']}"], "metric": metric,
                        "better": "higher", "estimate": paired["estimate"], "ci95": list(paired["ci95"]),
                        "n_subjects": paired["n_identities"], "unit": "identity", "n_seeds": n_seeds,
                        "active": True, "verdict": paired["verdict"]})
    return out


def base_precondition(rows: list[dict], n_subjects: int, mean_face_micc: float | None = None) -> dict:
    """Is the model without SIR a reconstruction at all, before any SIR row is read?

    Two tests: its ``geo_rank1_truth`` is at least 5x chance (``n_subjects``: the SIR suite's,
    chance = 1 / it), and, when ``mean_face_micc`` (mm, the mean face's MICC error on the same
    suite) is given, its ``rmse_micc`` is at most 0.8 of it. If the base model's shapes carry no
    identity, pushing them apart measures nothing.

    >>> base_precondition([{"stage": "params_recog", "geo_rank1_truth": 0.025}], 40)
    {'geo_rank1_truth': 0.025, 'chance': 0.025, 'met': False}
    >>> base_precondition([{"stage": "params_recog", "geo_rank1_truth": 0.3, "rmse_micc": 0.9}], 40, 1.2)["met"]
    True
    """
    base = next((r for r in rows if r.get("stage") == "params_recog"), None)
    if base is None or base.get("geo_rank1_truth") is None:
        return {}
    chance = 1.0 / n_subjects
    out = {"geo_rank1_truth": base["geo_rank1_truth"], "chance": chance}
    met = base["geo_rank1_truth"] >= PRECONDITION_RANK1_OVER_CHANCE * chance
    if mean_face_micc is not None and base.get("rmse_micc") is not None:
        out["micc_over_mean_face"] = base["rmse_micc"] / mean_face_micc
        met = met and out["micc_over_mean_face"] <= PRECONDITION_MICC_OVER_MEAN_FACE
    out["met"] = bool(met)
    return out


# ------------------------------------------------------------------ rows
def describe_pilot(name: str, result: dict) -> str:
    """One line on a pilot's precondition from its ``results.json`` (what the README quotes).

    >>> describe_pilot("pilot", {"train_config": {"base_steps": 9000}, "precondition":
    ...     {"micc_over_mean_face": 0.813, "geo_rank1_truth": 0.36, "chance": 0.025, "met": False}})
    'pilot, 9,000 base steps: MICC 0.81 x the mean face, rank-1 against the true shapes 14.4 x chance: not met'
    """
    pre = result["precondition"]
    return (f"{name}, {result['train_config']['base_steps']:,} base steps: MICC {pre['micc_over_mean_face']:.2f} x the "
            f"mean face, rank-1 against the true shapes {pre['geo_rank1_truth'] / pre['chance']:.1f} x chance: "
            f"{'met' if pre['met'] else 'not met'}")


def sfm_vs_pca_table(train_cfg, sir_cfg: SIREvalConfig, ks=None) -> list[dict]:
    """:func:`facelab.metrics.shape_models.sfm_vs_pca` at each dimension of ``ks`` (default
    ``sir_cfg.sfm_k``, and the recipe's SFM dimension): both models are fitted on the stage-1 3D
    shapes (:func:`facelab.train.sir.sfm_shapes` of the population identities) and tested on
    ``sir_cfg.sfm_test_identities`` held-out identities with the same kind of perturbation
    (another seed). Returns one :func:`~facelab.metrics.shape_models.sfm_vs_pca` dict per ``K``, in
    increasing ``K``."""
    from facelab.metrics.shape_models import sfm_vs_pca
    from facelab.train.sir import SFM_TEST_ID_START, sfm_config, sfm_shapes, sfm_train_ids

    model_k = train_cfg.sfm_k or train_cfg.n_shape or _model_n_shape(train_cfg)
    ks = sorted(set(ks if ks is not None else (*sir_cfg.sfm_k, model_k)))
    tr_s, tr_l = sfm_shapes(train_cfg, sfm_train_ids(train_cfg))
    test_ids = torch.arange(SFM_TEST_ID_START, SFM_TEST_ID_START + sir_cfg.sfm_test_identities)
    te_s, te_l = sfm_shapes(train_cfg, test_ids, seed=train_cfg.train.seed + 1)
    return [sfm_vs_pca(tr_s.double(), tr_l, te_s.double(), te_l, k, sfm_config(train_cfg), seed=sir_cfg.seed)
            for k in ks]


def _model_n_shape(train_cfg) -> int:
    """Identity components of the recipe's morphable model (its ``morphable`` file, else SynthFaces)."""
    from facelab.train.sir import recipe_morphable

    return recipe_morphable(train_cfg)[0].n_shape


def require_suite_mesh(train_cfg) -> None:
    """Raise a ``ValueError`` unless the recipe's morphable model has the mesh of the scoring suites.

    Every column compares reconstructions vertex for vertex with SynthFaces shapes at
    ``train_cfg.resolution`` (true shapes, face mask, scan correspondences); a ``morphable`` file
    in another mesh trains (``facelab train sir``) but cannot be scored here.

    >>> from facelab.train.sir import SIRTrainConfig
    >>> require_suite_mesh(SIRTrainConfig())  # SynthFaces: nothing to say
    """
    if not train_cfg.morphable:
        return
    from facelab.morphable import SynthFacesConfig, build_synthfaces
    from facelab.train.sir import recipe_morphable

    mine = recipe_morphable(train_cfg)[0]
    suite = build_synthfaces(SynthFacesConfig(resolution=train_cfg.resolution))
    if mine.n_verts != suite.n_verts or not torch.equal(mine.faces.cpu(), suite.faces.cpu()):
        raise ValueError(f"train.morphable: {train_cfg.morphable} ({mine.n_verts} vertices) is not in the mesh of "
                         f"the SynthFaces suites this comparison scores on ({suite.n_verts} vertices at "
                         f"resolution={train_cfg.resolution!r}); train it with `facelab train sir` instead")


def results_markdown(result: dict) -> str:
    """The comparison table and the SFM-vs-PCA table of a :func:`reproduce_sir` result as Markdown.

    >>> r = {"profile": "quick", "rows": [{"name": "+ SIR loss", "rmse_micc": 1.0, "lfw_accuracy": 0.7,
    ...      "sir_ratio": 0.5, "geo_rank1": 0.2, "geo_rank1_truth": 0.1, "param_rank1": 0.3,
    ...      "intra_mm": 1.0, "inter_mm": 2.0}], "sfm_vs_pca": None, "seconds": 1.0}
    >>> "| + SIR loss | 1.000 | 0.700 | 0.500" in results_markdown(r)
    True
    """
    from facelab.metrics.report import markdown_table

    rows = {r["name"]: ({c: r.get(c) for c in COLUMNS} if r.get("rmse_micc") is not None else None)
            for r in result["rows"]}
    parts = [f"# SIR and the Sphere Face Model on SynthFaces ({result['profile']} profile)",
             "**Comparison** (rmse_micc: MICC point-to-plane error, mm; lfw_accuracy: verification of the shape "
             "parameters; sir_ratio: mean intra- over inter-identity distance of the reconstructed identity shapes, "
             "lower is better; geo_rank1: rank-1 of reconstructed shapes against a reconstructed gallery; "
             "geo_rank1_truth: against the true neutral shapes; param_rank1: rank-1 of the parameters, cosine; "
             "intra_mm / inter_mm: aligned RMSE, mm"
             + (f"; trained rows: means over seeds {', '.join(map(str, result['seeds']))}" if len(result.get("seeds", [0])) > 1
                else "") + ")\n\n"
             + markdown_table(rows, columns=list(COLUMNS), row_header="model")]
    svp = result.get("sfm_vs_pca")
    if svp:
        table = {f"K = {r['K']}": {f"{m}_{k}": r[m][k] for k in ("rmse_mm", "nmi", "verification_accuracy")
                                   for m in ("pca", "sfm")} for r in svp}
        parts.append(f"**SFM vs PCA at equal dimension K** ({svp[0]['n_train']} training shapes, {svp[0]['n_test']} "
                     f"held-out shapes of {svp[0]['n_test_identities']} identities; rmse_mm: representation error; nmi: "
                     f"k-means clustering of the parameters; verification_accuracy: cosine)\n\n"
                     + markdown_table(table, row_header="dimension"))
    if "claims" in result:
        from facelab.metrics.report import claims_markdown

        parts.append(claims_markdown(result["claims"]))
    parts.append(f"Time: {result['seconds']} s (training {result.get('train_seconds')} s)")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ API
def reproduce_sir(profile: str = "quick", out_dir="runs/reproduce-sir", overrides=None, liu=None,
                  variants=tuple(ROW_NAMES), with_sfm_vs_pca: bool = True, seeds: tuple[int, ...] | None = None) -> dict:
    """Train (or reuse) the SIR recipe's stages and score the comparison table (module docstring).

    Args:
        profile: ``"quick"`` (CPU, one seed), ``"standard"`` (CPU, the 3D term, three seeds) or ``"full"``.
        out_dir: run folder: the stage checkpoints of :func:`facelab.train.sir.train_sir` (a stage
            whose ``<stage>.pt`` exists is not retrained), ``results.json`` and ``results.md``;
            seeds after the first train in ``seed<k>/``.
        overrides: ``["train.KEY=VALUE", "eval.KEY=VALUE", "sir.KEY=VALUE"]`` (or a dict with
            such keys) for :class:`~facelab.train.sir.SIRTrainConfig`,
            :class:`~facelab.metrics.model_eval.ModelEvalConfig` and :class:`SIREvalConfig`.
            ``train.data.kind=real`` (with ``train.data.labelled``, ``train.data.identities``)
            trains on folders; the scores stay on SynthFaces suites, so ``train.morphable`` must
            be in SynthFaces' mesh (:func:`require_suite_mesh`).
        liu: the Liu et al. row: a ``phase3.pt`` or a ``facelab reproduce liu2018`` folder; None:
            the committed Liu et al. run (:func:`~facelab.reproduce.liu2018.liu_reference`); False: none.
            Without a checkpoint the row is listed with empty cells.
        variants: the rows of :data:`ROW_NAMES` to train and score.
        with_sfm_vs_pca: also run :func:`sfm_vs_pca_table` (first seed).
        seeds: training seeds (None: :data:`PROFILE_SEEDS`).

    Returns:
        ``{"profile", "out_dir", "seeds", "rows": [{"name", "stage", "rmse_micc", "lfw_accuracy", "sir_ratio",
        "geo_rank1", "geo_rank1_truth", "param_rank1", "intra_mm", "inter_mm"}] (trained rows: means
        over seeds; the mean face has ``rmse_micc`` only), "rows_by_seed", "sfm_vs_pca": [one
        sfm_vs_pca dict per K], "diagnostics", "claims", "precondition",
        "liu_checkpoint", "train_config", "sir_config", "train_seconds", "seconds"}``.
    """
    from facelab.config import apply_overrides, split_overrides
    from facelab.metrics.model_eval import ModelEvalConfig
    from facelab.metrics.report import write_json
    from facelab.reproduce.liu2018 import mean_rows, seed_dir
    from facelab.train.sir import SIRTrainConfig, train_sir
    from facelab.train.stages import read_summary

    check_choice(profile, "profile", PROFILES)
    for v in variants:
        check_choice(v, "variants", list(ROW_NAMES))
    seeds = tuple(seeds) if seeds is not None else PROFILE_SEEDS[profile]
    if not seeds:
        raise ValueError("seeds: give at least one training seed")
    groups = split_overrides(overrides, OVERRIDE_GROUPS)
    start = time.perf_counter()
    out = Path(out_dir)
    train_cfg = apply_overrides(SIRTrainConfig(profile=profile, out_dir=str(out)), groups["train"])
    if "variants" not in {o.split("=", 1)[0] for o in groups["train"]}:
        train_cfg.variants = tuple(variants)
    eval_cfg = apply_overrides(ModelEvalConfig(), groups["eval"])
    sir_cfg = apply_overrides(SIREvalConfig(), groups["sir"]).resolved(profile)
    require_suite_mesh(train_cfg)  # before any training: the scores need SynthFaces' mesh
    seed_cfgs = {}
    for seed in seeds:  # trains only the stages whose checkpoint is missing
        cfg = dataclasses.replace(train_cfg, out_dir=str(seed_dir(out, seed, seeds)),
                                  train=dataclasses.replace(train_cfg.train, seed=seed))
        seed_cfgs[seed] = cfg
        train_sir(cfg)
    t_train = time.perf_counter() - start

    suites = _Suites(profile, eval_cfg, sir_cfg)
    liu_model, liu_path = liu_reference(liu, profile)
    liu_row = {"name": LIU_ROW, "stage": "liu2018_phase3",
               **(score_model(liu_model, suites) if liu_model is not None else {c: None for c in COLUMNS})}
    rows_by_seed, units = {}, {}
    for seed in seeds:
        rows_by_seed[seed] = []
        for v in train_cfg.variants:  # the function's variants, or a train.variants override
            model = load_evaluable(seed_dir(out, seed, seeds) / f"{v}.pt", expect_model="sir")
            into: dict = {}
            rows_by_seed[seed].append({"name": ROW_NAMES[v], "stage": v, **score_model(model, suites, into=into)})
            for metric, values in into.items():
                units.setdefault(v, {}).setdefault(metric, []).append(values)
    units = {v: {m: np.stack(vals) for m, vals in ms.items()} for v, ms in units.items()}
    mean_face = _mean_face_row(model, suites)
    rows = [mean_face, liu_row] + mean_rows(rows_by_seed, COLUMNS)
    svp = sfm_vs_pca_table(seed_cfgs[seeds[0]], sir_cfg) if with_sfm_vs_pca else None
    # per stage: each weighted term's gradient share on the regressor (and the SFM basis), and
    # the identity head's accuracy against chance (facelab.train.diagnostics); the first seed's
    # figures are reported, a term counts as active only if it pulled in every seed
    summaries = [read_summary(seed_dir(out, seed, seeds)) for seed in seeds]
    diags = [{stage: row["diagnostics"] for stage, row in summary.items() if "diagnostics" in row}
             for summary in summaries]
    activity = {term: all(sir_activity(d)[term] for d in diags) for term in sir_activity(diags[0])}
    claims = sir_claims(units, activity) + sfm_pca_claims(svp)
    result = {"profile": profile, "out_dir": str(out), "seeds": list(seeds), "rows": rows,
              "rows_by_seed": {str(k): v for k, v in rows_by_seed.items()}, "sfm_vs_pca": svp,
              "liu_checkpoint": liu_path, "diagnostics": diags[0], "claims": claims,
              "precondition": base_precondition(rows, sir_cfg.identities, mean_face["rmse_micc"]),
              "train_config": dataclasses.asdict(train_cfg), "sir_config": dataclasses.asdict(sir_cfg),
              "train_seconds": round(t_train, 2), "seconds": round(time.perf_counter() - start, 2)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(results_markdown(result))
    return result


def _mean_face_row(model, suites: _Suites) -> dict:
    """The mean face's MICC error on the MICC suite of ``model``'s image size and mesh (other columns empty)."""
    from facelab.metrics.model_eval import score_mean_face_micc

    with torch_threads(suites.eval_cfg.num_threads):
        errors = score_mean_face_micc(suites.get(model, "micc").suite, suites.eval_cfg)
    return {"name": MEAN_FACE_ROW, "stage": "mean_face", **{c: None for c in COLUMNS}, "rmse_micc": float(np.mean(errors))}
