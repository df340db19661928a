"""Score a trained model on a MICC-layout folder on disk: the MICC protocol on real videos and scans.

``facelab eval model CKPT --micc ROOT`` runs :func:`evaluate_micc_folder`:

1. :class:`facelab.data.MICCVideos` reads the folder (layout in :mod:`facelab.data.micc_folder`):
   per subject a scan with its landmarks (68 iBUG points, or the nose tip alone) and a
   folder of frames per video condition (cooperative, indoor, outdoor), with the frames'
   68 landmarks in ``ROOT/landmarks.json`` and their yaws in ``ROOT/yaw.json``.
2. Each frame is brought to the photo size the model was scored on in the suite path (its
   ``config.image_size``) and goes through the model's own input pipeline, as
   :func:`facelab.metrics.model_eval.predict_suite` feeds a rendered suite batch.
3. :func:`facelab.metrics.model_eval.score_micc` scores every video, as for the suite:
   "average over identity" (embeddings averaged over the video, decoded neutral),
   "three-view" (needs ``yaw.json``) and "single frame" (the middle frame), each the
   point-to-plane error (mm) of the scan cropped to 95 mm around its nose tip
   (:func:`facelab.metrics.micc_error`), per condition and overall. The predicted meshes are
   read with the triangles and landmarks of the mesh the network outputs: SynthFaces', or the
   model file a network trained with ``morphable=PATH`` records
   (:func:`facelab.models.morphable_record.network_morphable`).

The ICP limits are the quick profile's (those of ``--suite micc`` by default), or
``--set icp_iters=N --set icp_tol=MM``. On a folder written by ``facelab synth micc --format
micc`` at the model's image size and mesh resolution the errors are those of the suite path
on the same 8-bit frames (:class:`facelab.data.StoredSuite`); the suite path's float frames
differ from the stored ones by the 8-bit rounding only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from facelab.config import torch_threads
from facelab.data.micc_folder import MICCVideos
from facelab.metrics.lfw_folder import _morphable
from facelab.models.morphable_record import network_morphable
from facelab.metrics.model_eval import (
    ModelEvalConfig, _load, _model_setting, predict_suite, score_micc, write_report,
)

#: ModelEvalConfig fields that apply to a folder; the others size or seed SynthFaces suites.
FOLDER_FIELDS = ("batch_size", "device", "num_threads", "icp_iters", "icp_tol")
#: the profile whose ICP limits, device and thread defaults a folder run takes
FOLDER_PROFILE = "quick"


class _OnDevice:
    """A folder's batches moved to the model's device; other attributes come from the folder."""

    def __init__(self, folder: MICCVideos, device) -> None:
        self.folder, self.device = folder, device

    def batches(self, batch_size: int = 64, indices=None, progress: bool = False):
        for batch in self.folder.batches(batch_size, indices, progress):
            yield {k: v.to(self.device) for k, v in batch.items()}

    def __getattr__(self, name: str):
        return getattr(self.__dict__["folder"], name)

    def __len__(self) -> int:
        return len(self.folder)


def micc_videos_for(model, root, landmarks=None, yaw=None, on_bad_image: str = "raise", device="cpu",
                    morphable=None) -> MICCVideos:
    """The :class:`~facelab.data.MICCVideos` of ``root`` as ``model`` sees photos: frames resized to
    its ``config.image_size``, with the morphable model whose mesh it outputs (the scorer takes
    that mesh's triangles and landmarks).

    Args:
        model: an :class:`~facelab.models.Evaluable`. root: the folder.
        landmarks, yaw: the sidecars (default ``root/landmarks.json``, ``root/yaw.json`` if present;
            ``False``: none). on_bad_image: ``"raise"`` or ``"skip"``. device: of the morphable model.
        morphable: the model's own :class:`~facelab.morphable.MorphableModel` (a network trained with
            ``morphable=PATH``: :func:`facelab.models.morphable_record.network_morphable`); None:
            SynthFaces at its ``config.resolution``.
    """
    morphable = _morphable(_model_setting(model, "resolution"), device) if morphable is None else morphable.to(device)
    return MICCVideos(root, image_size=tuple(_model_setting(model, "image_size")), landmarks_path=landmarks,
                      yaw_path=yaw, on_bad_image=on_bad_image, morphable=morphable)


def score_micc_folder(model, folder: MICCVideos, cfg: ModelEvalConfig, return_units: bool = False):
    """The MICC rows of ``model`` on ``folder`` (:func:`facelab.metrics.model_eval.score_micc`).

    Args:
        model: an :class:`~facelab.models.Evaluable`. folder: from :func:`micc_videos_for`.
        cfg: a resolved :class:`~facelab.metrics.model_eval.ModelEvalConfig` (batch size,
            device, ICP limits).
        return_units: also each subject's error, as :func:`score_micc`.

    Returns:
        ``{row: {condition: {"mean", "std", "n"}, "all": {...}}}`` (mm, ``n`` videos); rows
        ``average_over_identity``, ``three_view`` (with yaws), ``single_frame``.

    Raises:
        ValueError: the model cuts its input from the landmarks and the folder has none, or
            a subject's scan has no landmarks (folders named).

    >>> import tempfile
    >>> from facelab.data import export_micc, make_suite
    >>> from facelab.models import build_model
    >>> root = export_micc(make_suite("micc", n_identities=1, frames_per_video=2, image_size=32,
    ...                               resolution="quick"), tempfile.mkdtemp())["out"]
    >>> net = build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"})
    >>> rows = score_micc_folder(net.eval(), micc_videos_for(net, root), ModelEvalConfig(device="cpu").resolved("quick"))
    >>> sorted(rows), sorted(rows["single_frame"])
    (['average_over_identity', 'single_frame', 'three_view'], ['all', 'cooperative', 'indoor', 'outdoor'])
    """
    for label in range(folder.n_identities):  # scan errors before the model runs
        folder.scan_landmarks(label)
    suite = _OnDevice(folder, cfg.device)
    try:
        pred = predict_suite(model, suite, cfg.batch_size)
    except KeyError as err:
        if folder.landmarks is not None:
            raise
        raise ValueError(f"{folder.root}: the model cuts its input from the face's landmarks ({err}), but the "
                         f"folder has no landmarks sidecar; write {folder.root / 'landmarks.json'} "
                         "(format: facelab.io.lfw)") from None
    return score_micc(model, FOLDER_PROFILE, cfg, suite=suite, pred=pred, return_units=return_units)


def evaluate_micc_folder(checkpoint_or_model, root, landmarks=None, yaw=None, on_bad_image: str = "raise",
                         out_dir=None, config: ModelEvalConfig | None = None, **overrides) -> dict:
    """Score a checkpoint (or model) on a MICC-layout folder; the result layout of
    :func:`facelab.metrics.model_eval.evaluate_model`'s ``micc`` suite, with the folder's files.

    Args:
        checkpoint_or_model: a checkpoint path or a model.
        root, landmarks, yaw, on_bad_image: as :func:`micc_videos_for`.
        out_dir: if given, write ``report.json`` and ``report.md`` there.
        config: a :class:`~facelab.metrics.model_eval.ModelEvalConfig`; only
            :data:`FOLDER_FIELDS` apply (``overrides`` replace them).

    Returns:
        ``{"micc_folder", "landmarks_file", "yaw_file", "subjects", "n_videos", "n_frames",
        "skipped", "model_name", "checkpoint", "step", "image_size", "resolution", "config",
        "micc": {row: {condition: {"mean", "std", "n"}}}, "time_s"}`` (errors in mm).
    """
    cfg = dataclasses.replace(config or ModelEvalConfig(), **overrides)
    default = ModelEvalConfig()
    changed = [f.name for f in dataclasses.fields(cfg)
               if f.name not in FOLDER_FIELDS and getattr(cfg, f.name) != getattr(default, f.name)]
    if changed:
        raise ValueError(f"{', '.join(changed)}: size or seed a SynthFaces suite; a folder is scored on its own "
                         f"videos (only {', '.join(FOLDER_FIELDS)} apply)")
    cfg = cfg.resolved(FOLDER_PROFILE)
    start = time.perf_counter()
    with torch_threads(cfg.num_threads):
        model, ckpt, info = _load(checkpoint_or_model, cfg.device)
        # a network trained with morphable=PATH outputs that file's mesh, not SynthFaces'
        own = None if ckpt is None else network_morphable(ckpt["model_config"], _model_setting(model, "resolution"))
        folder = micc_videos_for(model, root, landmarks, yaw, on_bad_image, cfg.device, morphable=own)
        rows = score_micc_folder(model, folder, cfg)
    videos = {(int(k), int(c)) for k, c in zip(folder.labels, folder.conditions)}
    result = {"micc_folder": str(folder.root),
              "landmarks_file": None if folder.landmarks_path is None else str(folder.landmarks_path),
              "yaw_file": None if folder.yaw_path is None else str(folder.yaw_path),
              "subjects": folder.names, "n_videos": len(videos), "n_frames": len(folder),
              "skipped": [str(p) for p, _ in folder.skipped], **info,
              "image_size": list(_model_setting(model, "image_size")), "resolution": _model_setting(model, "resolution"),
              "config": {k: getattr(cfg, k) for k in FOLDER_FIELDS}, "micc": rows,
              "time_s": round(time.perf_counter() - start, 2)}
    if out_dir is not None:
        write_report(result, out_dir, micc_folder_markdown(result))
    return result


def micc_folder_markdown(result: dict) -> str:
    """Markdown of an :func:`evaluate_micc_folder` result: a head line and the MICC table."""
    from facelab.metrics.report import baselines_markdown

    head = (f"**{result['model_name']}** ({result.get('checkpoint') or 'in-memory model'}, step {result.get('step')}) "
            f"on the MICC folder `{result['micc_folder']}`: {len(result['subjects'])} subjects, "
            f"{result['n_videos']} videos, {result['n_frames']} frames, fed as "
            f"{result['image_size'][0]}x{result['image_size'][1]} px photos")
    if result["skipped"]:
        head += f"; {len(result['skipped'])} unreadable frame(s) skipped"
    if result["yaw_file"] is None:
        head += "; no yaw.json, so no three-view row"
    return "\n\n".join([head, baselines_markdown({"micc": result["micc"]}), f"Time: {result['time_s']} s"]) + "\n"


def evaluate_micc_folder_cli(checkpoint, root, landmarks=None, yaw=None, on_bad_image: str = "raise",
                             as_json: bool = False, out=None, overrides: list[str] | None = None) -> int:
    """``facelab eval model CHECKPOINT --micc ROOT [--landmarks F] [--yaw F] [--on-bad-image skip] [--json]
    [--out DIR] [--set K=V]``.

    Prints the JSON result (``as_json``) or the Markdown report; returns the exit code 0.
    """
    from facelab.config import apply_overrides
    from facelab.metrics.report import write_json

    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    cfg = apply_overrides(ModelEvalConfig(), overrides)
    result = evaluate_micc_folder(checkpoint, root, landmarks, yaw, on_bad_image, out_dir=out, config=cfg)
    print(write_json(result, indent=None) if as_json else micc_folder_markdown(result))
    return 0
