"""``facelab eval``: score your own results with facelab's protocols (book ``book/07_evaluation.ipynb``).

    facelab eval verify --embeddings F.npz [--folds 10] [--json]
    facelab eval recon --pred P.obj --gt G.obj --protocol rmse|micc|now
                       [--pred-landmarks L.txt] [--gt-landmarks L.npy] [--align rigid] [--json]
    facelab eval baselines [--profile quick|full] [--set key=value ...] [--json] [--out F.json]
    facelab eval model CKPT --suite micc|bu3dfe|lfw [--profile P] [--set key=value ...] [--json] [--out DIR]
    facelab eval model CKPT --lfw ROOT [--pairs ROOT/pairs.txt] [--landmarks F|auto|centre] [--json] [--out DIR]
    facelab eval model CKPT --micc ROOT [--landmarks F] [--yaw F] [--on-bad-image skip] [--json] [--out DIR]

``verify``: ``F.npz`` holds ``emb1 (N, D)``, ``emb2 (N, D)`` and ``issame (N,)`` in pair
order (the pairs of fold k contiguous, as in LFW's ``pairs.txt``); prints
:func:`facelab.metrics.verify`'s accuracy (mean and std over folds), AUC, EER, VAL, FAR
and TAR@FAR.

``recon``: ``P`` and ``G`` are ``.obj``/``.ply`` meshes in mm; landmark files are
``.txt`` (whitespace or comma separated) or ``.npy`` arrays of 3D points ``(K, 3)``.

* ``rmse``: P and G in dense correspondence (same vertex count); rigid (``--align``)
  Procrustes over all vertices, then per-vertex distances; prints ``rmse`` too.
* ``micc``: G is cropped to 95 mm around its nose tip: ``--gt-landmarks`` point 30 if 68
  points (iBUG), point 4 if 7 (NoW order), the only point if 1, ``--nose-index`` otherwise,
  or without landmarks the most forward (largest z) vertex of G. With both landmark files
  (same count) the ICP starts from their Procrustes fit. Point-to-plane distances.
* ``now``: 7 landmarks each (NoW order); similarity Procrustes, rigid ICP refinement,
  scan-to-mesh distances of every vertex of G.

All print ``mean``, ``median`` and ``std`` (mm).

``model``: a trained checkpoint on a SynthFaces suite (:func:`facelab.metrics.model_eval.evaluate_model`)
or, with ``--lfw``, on an LFW-layout folder on disk and a pairs file over it
(:func:`facelab.metrics.lfw_folder.evaluate_lfw_folder`; ``facelab synth lfw --format lfw`` writes one;
``--landmarks`` picks where the faces' landmarks come from: a sidecar file, by default
``ROOT/landmarks.json`` when present; ``auto``: that sidecar when present, else dlib's detections,
written first to ``DIR/landmarks.json`` with ``--out DIR`` or to ``ROOT/landmarks.json``, with the
centre template for photos without a face; ``centre``: the fixed centre crop of
:func:`facelab.data.lfw_folder.centre_landmarks` for every image),
or, with ``--micc``, on a MICC-layout folder of videos and scans
(:func:`facelab.metrics.micc_folder.evaluate_micc_folder`; ``facelab synth micc --format micc`` writes one).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

PROTOCOLS = ("rmse", "micc", "now")
EMBEDDING_KEYS = ("emb1", "emb2", "issame")
LANDMARK_SUFFIXES = (".txt", ".npy")
IBUG68_NOSE_TIP = 30
#: --lfw --landmarks keywords (anything else is a sidecar path): detect with dlib, or the fixed centre crop
LFW_LANDMARKS_AUTO, LFW_LANDMARKS_CENTRE = "auto", "centre"
NOW7_NOSE = 4  # NoW's 7 points: 4 eye corners, the nose, 2 mouth corners
Z_AXIS = 2  # facelab's frame: z points toward the camera, so the nose tip is the largest z


# -------------------------------------------------------------------- loading
def _existing(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def load_embeddings(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``emb1 (N, D)``, ``emb2 (N, D)`` float and ``issame (N,)`` bool from an ``.npz``.

    Raises ``FileNotFoundError``/``ValueError`` naming the file and the missing key or the
    inconsistent shapes.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "e.npz")
    >>> np.savez(p, emb1=np.ones((4, 2)), emb2=np.ones((4, 2)), issame=[1, 0, 1, 0])
    >>> [a.shape for a in load_embeddings(p)]
    [(4, 2), (4, 2), (4,)]
    """
    path = _existing(path, "embeddings file")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, expected an .npz archive with {list(EMBEDDING_KEYS)}")
    with data:
        missing = [k for k in EMBEDDING_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; an embeddings file needs {list(EMBEDDING_KEYS)}")
        emb1, emb2, issame = (np.asarray(data[k]) for k in EMBEDDING_KEYS)
    for name, emb in (("emb1", emb1), ("emb2", emb2)):
        if emb.ndim != 2 or emb.dtype.kind not in "fiu":
            raise ValueError(f"{path}: '{name}' must be a numeric (N, D) array, got shape {emb.shape} dtype {emb.dtype}")
    if emb1.shape != emb2.shape:
        raise ValueError(f"{path}: 'emb1' {emb1.shape} and 'emb2' {emb2.shape} must have the same shape")
    if issame.shape != (emb1.shape[0],):
        raise ValueError(f"{path}: 'issame' must have one entry per pair ({emb1.shape[0]}), got shape {issame.shape}")
    if issame.dtype != bool:
        if issame.dtype.kind not in "iuf" or not np.isin(issame, (0, 1)).all():
            raise ValueError(f"{path}: 'issame' must be booleans or 0/1, got dtype {issame.dtype}")
        issame = issame.astype(bool)
    return emb1.astype(np.float64), emb2.astype(np.float64), issame


def load_landmarks(path, what: str = "landmarks file") -> np.ndarray:
    """Read 3D points ``(K, 3)`` float64 from a ``.txt`` (whitespace/comma) or ``.npy`` file.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "l.txt")
    >>> _ = open(p, "w").write("0 0 1\\n1, 0, 0\\n")
    >>> load_landmarks(p).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    path = _existing(path, what)
    suffix = path.suffix.lower()
    if suffix not in LANDMARK_SUFFIXES:
        raise ValueError(f"{path}: unsupported landmark format {suffix!r}; expected one of {LANDMARK_SUFFIXES}")
    try:
        if suffix == ".npy":
            pts = np.load(path, allow_pickle=False)
        else:
            pts = np.loadtxt(path.read_text().replace(",", " ").splitlines(), ndmin=2)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: cannot read landmarks ({err})") from None
    pts = np.asarray(pts)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0 or pts.dtype.kind not in "fiu":
        raise ValueError(f"{path}: landmarks must be a numeric (K, 3) array of 3D points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path}: landmarks contain NaN or Inf")
    return pts.astype(np.float64)


def nose_tip(gt_verts: np.ndarray, gt_landmarks: np.ndarray | None = None, nose_index: int | None = None) -> np.ndarray:
    """The MICC crop centre ``(3,)`` mm of a ground-truth scan.

    From ``gt_landmarks (K, 3)``: point ``nose_index`` if given, else point 30 for 68
    (iBUG), 4 for 7 (NoW), 0 for 1; without landmarks the vertex of ``gt_verts (V, 3)``
    with the largest z (z points toward the camera).

    >>> nose_tip(np.array([[0.0, 0, 1], [0, 0, 5], [1, 0, 2]])).tolist()
    [0.0, 0.0, 5.0]
    """
    if gt_landmarks is None:
        if nose_index is not None:
            raise ValueError("--nose-index: needs --gt-landmarks")
        return gt_verts[int(np.argmax(gt_verts[:, Z_AXIS]))]
    n = gt_landmarks.shape[0]
    if nose_index is None:
        nose_index = {68: IBUG68_NOSE_TIP, 7: NOW7_NOSE, 1: 0}.get(n)
        if nose_index is None:
            raise ValueError(f"--gt-landmarks: cannot tell the nose tip among {n} points; give --nose-index")
    if not 0 <= nose_index < n:
        raise ValueError(f"--nose-index: must lie in [0, {n}), got {nose_index}")
    return gt_landmarks[nose_index]


# ------------------------------------------------------------------ protocols
def eval_verify(embeddings, n_folds: int = 10) -> dict:
    """The LFW verification protocol on an embeddings ``.npz`` (see :func:`load_embeddings`).

    Returns :meth:`facelab.metrics.VerificationResult.to_dict` (fractions in [0, 1]):
    ``accuracy_mean, accuracy_std, auc, eer, val, val_std, far, tar_at_far, best_thresholds``.
    """
    from facelab.metrics import verify

    emb1, emb2, issame = load_embeddings(embeddings)
    return verify(emb1, emb2, issame, n_folds=n_folds).to_dict()


def _summary(distances: np.ndarray) -> dict:
    return {"mean": float(np.mean(distances)), "median": float(np.median(distances)),
            "std": float(np.std(distances)), "n_points": int(distances.shape[0])}


def eval_recon(pred, gt, protocol: str, pred_landmarks=None, gt_landmarks=None, align: str = "rigid",
               nose_index: int | None = None) -> dict:
    """Score a predicted mesh file against a ground-truth mesh file (mm).

    Args:
        pred, gt: ``.obj``/``.ply`` paths. protocol: ``"rmse"``, ``"micc"`` or ``"now"``.
        pred_landmarks, gt_landmarks: optional ``.txt``/``.npy`` paths of ``(K, 3)`` points.
        align: Procrustes of the ``rmse`` protocol (``rigid``, ``similarity``, ``none``).
        nose_index: which ``gt_landmarks`` point is the nose tip (``micc``).

    Returns:
        ``{"protocol", "mean", "median", "std", "n_points"}`` (mm) plus ``"rmse"`` for the
        ``rmse`` protocol.
    """
    from facelab.checks import check_choice
    from facelab.io import read_mesh
    from facelab.metrics import micc_error, now_error, rmse
    from facelab.metrics.reconstruction import ALIGN_CHOICES, align_to

    check_choice(protocol, "--protocol", PROTOCOLS)
    check_choice(align, "--align", ALIGN_CHOICES)
    p_mesh, g_mesh = read_mesh(pred), read_mesh(gt)
    pv, pf = p_mesh.verts.double().numpy(), p_mesh.faces.numpy()
    gv, gf = g_mesh.verts.double().numpy(), g_mesh.faces.numpy()
    pl = None if pred_landmarks is None else load_landmarks(pred_landmarks, "--pred-landmarks file")
    gl = None if gt_landmarks is None else load_landmarks(gt_landmarks, "--gt-landmarks file")
    out: dict = {"protocol": protocol}

    if protocol == "rmse":
        if pv.shape != gv.shape:
            raise ValueError(f"--pred {pred}: has {pv.shape[0]} vertices but --gt {gt} has {gv.shape[0]}; "
                             "the rmse protocol needs meshes in dense correspondence")
        aligned = align_to(pv, gv, np.arange(pv.shape[0]), align)
        out.update(_summary(np.linalg.norm(aligned - gv, axis=1)))
        out["rmse"] = rmse(pv, gv, align=align)
        return out

    if protocol == "micc":
        if pl is not None and gl is None:
            raise ValueError("--pred-landmarks: the micc protocol needs --gt-landmarks as well")
        use_lmk = pl is not None and gl is not None
        if use_lmk and pl.shape != gl.shape:
            raise ValueError(f"--pred-landmarks {pred_landmarks}: {pl.shape[0]} points but --gt-landmarks has {gl.shape[0]}")
        res = micc_error(pv, pf, gv, nose_tip_gt=nose_tip(gv, gl, nose_index),
                         pred_landmarks=pl if use_lmk else None, gt_landmarks=gl if use_lmk else None)
        out.update(_summary(res["distances"]))
        return out

    for flag, lmk in (("--pred-landmarks", pl), ("--gt-landmarks", gl)):
        if lmk is None:
            raise ValueError(f"{flag}: the now protocol needs 7 landmarks for both meshes")
        if lmk.shape[0] != 7:
            raise ValueError(f"{flag}: the now protocol needs 7 landmarks, got {lmk.shape[0]}")
    res = now_error(pv, pf, pl, gv, gl)
    out.update(_summary(res["distances"]))
    return out


# ------------------------------------------------------------------------ CLI
def _print(result: dict, as_json: bool) -> None:
    from facelab.metrics.report import write_json

    if as_json:
        print(write_json(result, indent=None))
        return
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key}: {value}")


def _cmd_verify(args) -> int:
    _print(eval_verify(args.embeddings, n_folds=args.folds), args.json)
    return 0


def _cmd_recon(args) -> int:
    result = eval_recon(args.pred, args.gt, args.protocol, args.pred_landmarks, args.gt_landmarks,
                        align=args.align, nose_index=args.nose_index)
    _print(result, args.json)
    return 0


def _cmd_baselines(args) -> int:
    from facelab.config import apply_overrides
    from facelab.metrics.baselines import BaselineConfig, run_baselines
    from facelab.metrics.report import baselines_markdown, write_json

    cfg = apply_overrides(BaselineConfig(profile=args.profile), args.set)
    result = run_baselines(config=cfg)
    if args.out:
        write_json(result, args.out)
    if args.json:
        print(write_json(result, indent=None))
    else:
        print(baselines_markdown(result))
    for name, seconds in result["timings_s"].items():
        print(f"time {name}: {seconds:.1f} s", file=sys.stderr)
    return 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` (with ``verify``, ``recon``, ``baselines``, ``model``) on a ``facelab`` sub-parser set."""
    from facelab.metrics.model_eval import EVAL_SUITES
    from facelab.metrics.reconstruction import ALIGN_CHOICES

    p = subparsers.add_parser("eval", help="score embeddings or meshes with facelab's protocols; run the baselines")
    sub = p.add_subparsers(dest="eval_command", required=True)

    v = sub.add_parser("verify", help="LFW-protocol verification of embedding pairs")
    v.add_argument("--embeddings", required=True, help=".npz with emb1 (N, D), emb2 (N, D), issame (N,) in pair order")
    v.add_argument("--folds", type=int, default=10, help="contiguous folds (10 for LFW)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=_cmd_verify)

    r = sub.add_parser("recon", help="reconstruction error of a predicted mesh against a ground-truth mesh (mm)")
    r.add_argument("--pred", required=True, help="predicted mesh (.obj/.ply, mm)")
    r.add_argument("--gt", required=True, help="ground-truth mesh or scan (.obj/.ply, mm)")
    r.add_argument("--protocol", required=True, choices=PROTOCOLS)
    r.add_argument("--pred-landmarks", help="(K, 3) points on the prediction (.txt/.npy)")
    r.add_argument("--gt-landmarks", help="(K, 3) points on the ground truth (.txt/.npy)")
    r.add_argument("--align", default="rigid", choices=ALIGN_CHOICES, help="alignment of the rmse protocol")
    r.add_argument("--nose-index", type=int, help="micc: which --gt-landmarks point is the nose tip")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=_cmd_recon)

    b = sub.add_parser("baselines", help="mean face, oracle and landmark-fit baselines on the SynthFaces suites")
    b.add_argument("--profile", default="quick", choices=["quick", "standard", "full"])
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a BaselineConfig field (repeatable)")
    b.add_argument("--json", action="store_true", help="print one JSON object (else Markdown tables)")
    b.add_argument("--out", help="also write the JSON to this file")
    b.set_defaults(func=_cmd_baselines)

    m = sub.add_parser("model", help="evaluate a trained facelab checkpoint on a SynthFaces suite, an LFW folder "
                                     "or a MICC folder (JSON + Markdown report)")
    m.add_argument("checkpoint", help="a checkpoint written by facelab's trainer (e.g. runs/regressor-quick/last.pt)")
    where = m.add_mutually_exclusive_group(required=True)
    where.add_argument("--suite", choices=EVAL_SUITES, help="render this SynthFaces suite and score it")
    where.add_argument("--lfw", metavar="ROOT", help="an LFW-layout folder (ROOT/NAME/NAME_0001.jpg or .png): the "
                                                     "LFW protocol on the pairs of --pairs")
    where.add_argument("--micc", metavar="ROOT", help="a MICC-layout folder (ROOT/SUBJECT/scan.obj, "
                                                      "ROOT/SUBJECT/CONDITION/frame_0001.png): the MICC protocol")
    m.add_argument("--pairs", help="--lfw: the pairs file (LFW's pairs.txt format; default ROOT/pairs.txt)")
    m.add_argument("--landmarks", help="--lfw, --micc: the 68-landmark sidecar (default ROOT/landmarks.json; "
                                       "format in facelab.io.lfw); --lfw also: 'auto' (the sidecar if present, "
                                       "else detect with dlib, the facelab[photo] extra, and write it) or 'centre' "
                                       "(a fixed centre crop, no detection)")
    m.add_argument("--yaw", help="--micc: the frames' yaw sidecar (default ROOT/yaw.json; format in "
                                 "facelab.data.micc_folder); without one, no three-view row")
    m.add_argument("--on-bad-image", choices=["raise", "skip"], help="--micc: an unreadable frame stops the run "
                                                                     "(default) or is left out")
    m.add_argument("--profile", choices=["quick", "standard", "full"], help="--suite: the suite's size (default quick)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a ModelEvalConfig field (repeatable)")
    m.add_argument("--out", help="folder for report.json and report.md")
    m.add_argument("--json", action="store_true", help="print one JSON object (else the Markdown report)")
    m.set_defaults(func=_cmd_model)
    return p


def _cmd_model(args) -> int:
    if args.micc is None:
        for flag, value in (("--yaw", args.yaw), ("--on-bad-image", args.on_bad_image)):
            if value is not None:
                raise ValueError(f"{flag}: belongs to --micc ROOT (a folder on disk)")
    if args.micc is not None:
        if args.landmarks in (LFW_LANDMARKS_AUTO, LFW_LANDMARKS_CENTRE):
            raise ValueError(f"--landmarks {args.landmarks}: belongs to --lfw ROOT; a MICC folder takes a sidecar file")
        if args.pairs is not None:
            raise ValueError("--pairs: belongs to --lfw ROOT; a MICC folder is scored per video")
        if args.profile is not None:
            raise ValueError("--profile: sizes a SynthFaces suite; --micc scores the folder's own videos "
                             "(ICP limits: --set icp_iters=N --set icp_tol=MM)")
        from facelab.metrics.micc_folder import evaluate_micc_folder_cli

        return evaluate_micc_folder_cli(args.checkpoint, args.micc, args.landmarks, args.yaw,
                                        args.on_bad_image or "raise", as_json=args.json, out=args.out,
                                        overrides=args.set)
    if args.lfw is None:
        for flag, value in (("--pairs", args.pairs), ("--landmarks", args.landmarks)):
            if value is not None:
                raise ValueError(f"{flag}: belongs to --lfw ROOT (a folder on disk), not to --suite")
        from facelab.metrics.model_eval import evaluate_model_cli

        return evaluate_model_cli(args.checkpoint, args.suite, as_json=args.json, out=args.out,
                                  profile=args.profile or "quick", overrides=args.set)
    if args.profile is not None:
        raise ValueError("--profile: sizes a SynthFaces suite; --lfw scores the folder's own pairs")
    from facelab.metrics.lfw_folder import evaluate_lfw_folder_cli

    landmarks, missing, source = args.landmarks, "raise", None
    if landmarks == LFW_LANDMARKS_AUTO:
        landmarks, missing, source = _detected_lfw_landmarks(args.lfw, args.out), "centre", LFW_LANDMARKS_AUTO
    return evaluate_lfw_folder_cli(args.checkpoint, args.lfw, args.pairs, landmarks, as_json=args.json,
                                   out=args.out, overrides=args.set, missing_landmarks=missing,
                                   landmark_source=source)


def _detected_lfw_landmarks(root, out) -> Path:
    """``--lfw ROOT --landmarks auto``: the sidecar to score with, written by dlib's detector if needed.

    ``ROOT/landmarks.json`` when it exists; else :func:`facelab.apps.landmark_folder` writes one
    (``OUT/landmarks.json`` with ``--out``, else ``ROOT/landmarks.json``, which the next run reuses),
    and one line on stderr says how many photos had a face. Detection runs here, in the command line,
    because the metrics layer does not import the apps.
    """
    from facelab.io.lfw import LFW_LANDMARKS_FILE

    existing = Path(root) / LFW_LANDMARKS_FILE
    if existing.is_file():
        return existing
    sidecar = Path(out) / LFW_LANDMARKS_FILE if out is not None else existing
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    try:
        from facelab.apps.landmarks import landmark_folder

        report = landmark_folder(root, out=sidecar)
    except ImportError as err:  # MissingPhotoExtra is one; main() would print a traceback
        raise ValueError(f"--landmarks auto: needs dlib ({err}); or score with --landmarks centre "
                         "(a fixed centre crop)") from None
    print(f"--landmarks auto: {report['n_landmarked']} of {report['n_images']} photos have a face -> {sidecar}; "
          "the others get the centre template", file=sys.stderr)
    return sidecar


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m facelab.eval_cli``: ``facelab eval`` alone.

    >>> build_parser().parse_args(["eval", "verify", "--embeddings", "e.npz"]).folds
    10
    """
    parser = argparse.ArgumentParser(prog="facelab", description="facelab eval: score results with facelab's protocols.")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m facelab.eval_cli ...``: the same as ``facelab eval ...``."""
    args = build_parser().parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"facelab eval: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
