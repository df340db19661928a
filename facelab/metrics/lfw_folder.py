"""Score a trained model on an LFW-layout folder on disk: the LFW protocol on real files.

``facelab eval model CKPT --lfw ROOT --pairs ROOT/pairs.txt`` runs :func:`evaluate_lfw_folder`:

1. :class:`facelab.data.LFWFolder` reads the pairs file (:func:`facelab.io.read_pairs`; any
   file in LFW's format over the folder, e.g. a subset of the pairs or one written by hand),
   finds each listed image (``ROOT/NAME/NAME_0001.jpg`` or ``.png``) and its 68 landmarks in
   ``ROOT/landmarks.json`` (format: :mod:`facelab.io.lfw`). Real LFW ships without that
   sidecar: ``--landmarks centre`` (``landmarks="centre"``) gives every image the fixed
   centre-crop landmarks of :data:`facelab.data.lfw_folder.CENTRE_TEMPLATE`, and
   ``--landmarks auto`` detects them first (dlib, the ``facelab[photo]`` extra; the command line
   writes the sidecar with :func:`facelab.apps.landmark_folder`, and photos without a detected
   face get the centre template).
2. Each image is brought to the photo size the model was scored on in the suite path (its
   ``config.image_size``; resized with its landmarks only when the file has another size)
   and goes through the model's own input pipeline, ``prepare_images({"image",
   "landmarks2d"})`` (Liu et al.: the five-point aligned crop), exactly as
   :func:`facelab.metrics.model_eval.predict_suite` feeds a rendered suite batch.
3. The identity embeddings of the two images of each pair go to :func:`facelab.metrics.verify`
   with the pairs file's folds.

On a folder written by ``facelab synth lfw --format lfw`` at the model's image size and mesh
resolution, the embeddings are those of the suite path on the same 8-bit photos
(:class:`facelab.data.StoredSuite`), so the accuracy equals that suite score; the float
photos the suite path renders differ from the stored ones by the 8-bit rounding only
(:mod:`facelab.data.lfw_folder` says how much that moves the score).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from facelab.config import torch_threads
from facelab.data.lfw_folder import CENTRE, LFWFolder
from facelab.metrics.model_eval import ModelEvalConfig, _load, _model_setting, write_report
from facelab.metrics.verification import VerificationResult, verify

#: ModelEvalConfig fields that apply to a folder; the others size SynthFaces suites.
FOLDER_FIELDS = ("batch_size", "device", "num_threads")
#: the profile whose device and thread defaults a folder run takes (CPU: 1 thread, as the suites)
FOLDER_PROFILE = "quick"


def _morphable(resolution: str, device):
    """The SynthFaces morphable model the suite path hands ``reconstruct`` (models that decode
    coefficients need it; Liu et al.'s carries its own)."""
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    return build_synthfaces(SynthFacesConfig(resolution=resolution)).to(device)


@torch.no_grad()
def embed_lfw_folder(model, folder: LFWFolder, batch_size: int = 64, device="cpu") -> torch.Tensor:
    """The model's identity embedding of every image of ``folder`` (see the module docstring).

    Args:
        model: an :class:`~facelab.models.Evaluable` (e.g. :func:`facelab.models.load_evaluable`).
        folder: the :class:`~facelab.data.LFWFolder`.
        batch_size: images per forward pass. device: where the model runs.

    Returns:
        ``(M, D)`` float CPU tensor, row ``i`` for ``folder.paths[i]``.

    Raises:
        ValueError: the model aligns faces by their landmarks and the folder has none (no sidecar,
            not ``"centre"``); the message names both ways out.

    >>> import tempfile
    >>> from facelab.data import export_lfw, make_suite
    >>> from facelab.models import build_model
    >>> root = export_lfw(make_suite("lfw", n_identities=4, pairs_per_fold=1, n_folds=2, image_size=32,
    ...                              resolution="quick"), tempfile.mkdtemp())["out"]
    >>> net = build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"})
    >>> embed_lfw_folder(net.eval(), LFWFolder(root)).shape[0]
    8
    """
    size = tuple(_model_setting(model, "image_size"))
    morphable = _morphable(_model_setting(model, "resolution"), device)
    prepare = getattr(model, "prepare_images", None)
    out = []
    for chunk in torch.split(torch.arange(len(folder)), batch_size):
        photos = [folder.photo(i, size) for i in chunk.tolist()]
        batch = {"image": torch.stack([img for img, _ in photos]).to(device)}
        if folder.landmark_source is not None:
            batch["landmarks2d"] = torch.stack([lm for _, lm in photos]).to(device)
        try:
            images = prepare(batch) if prepare is not None else batch["image"]
        except KeyError as err:
            raise ValueError(f"{folder.root}: the model cuts its input from the face's landmarks ({err}), but the "
                             f"folder has no landmarks sidecar ({folder.root / 'landmarks.json'}); score it with "
                             f"--landmarks auto (detect them: the facelab[photo] extra, as `facelab landmarks ROOT`) "
                             f"or --landmarks centre (a fixed centre crop; landmarks={CENTRE!r} in Python)") from None
        out.append(model.reconstruct(images, morphable)["embedding"].detach().cpu())
    return torch.cat(out)


def score_lfw_folder(model, root, pairs=None, landmarks=None, batch_size: int = 64, device="cpu",
                     missing_landmarks: str = "raise") -> VerificationResult:
    """:func:`~facelab.metrics.verify` of ``model``'s embeddings on the pairs of an LFW-layout folder.

    Args:
        model: an :class:`~facelab.models.Evaluable`.
        root: the image folder. pairs: its pairs file (default ``root/pairs.txt``).
        landmarks: the sidecar (default ``root/landmarks.json`` if present), or ``"centre"``:
            the fixed centre-crop template for every image (:func:`facelab.data.lfw_folder.centre_landmarks`).
        batch_size, device: as :func:`embed_lfw_folder`.
        missing_landmarks: ``"raise"``, or ``"centre"``: images absent from the sidecar get the
            template (:class:`~facelab.data.LFWFolder`).

    Returns:
        the :class:`~facelab.metrics.verification.VerificationResult` over the pairs file's folds
        (fractions; ``pair_correct`` in the file's pair order).

    >>> import tempfile
    >>> from facelab.data import export_lfw, make_suite
    >>> from facelab.models import build_model
    >>> root = export_lfw(make_suite("lfw", n_identities=4, pairs_per_fold=1, n_folds=2, image_size=32,
    ...                              resolution="quick"), tempfile.mkdtemp())["out"]
    >>> net = build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"})
    >>> len(score_lfw_folder(net.eval(), root).fold_accuracies)
    2
    """
    folder = LFWFolder(root, pairs, landmarks, missing_landmarks)
    return _score(model, folder, batch_size, device)


def _score(model, folder: LFWFolder, batch_size: int, device) -> VerificationResult:
    if folder.n_folds < 2:
        raise ValueError(f"{folder.pairs_path}: holds one fold; the LFW protocol picks each fold's threshold on the "
                         "other folds, so it needs at least 2 (header 'n_folds n_per_half')")
    emb = embed_lfw_folder(model, folder, batch_size, device).double().numpy()
    return verify(emb[folder.index1.numpy()], emb[folder.index2.numpy()], folder.issame.numpy(), n_folds=folder.n_folds)


def evaluate_lfw_folder(checkpoint_or_model, root, pairs=None, landmarks=None, out_dir=None,
                        config: ModelEvalConfig | None = None, missing_landmarks: str = "raise",
                        landmark_source: str | None = None, **overrides) -> dict:
    """Score a checkpoint (or model) on an LFW-layout folder; the result layout of
    :func:`facelab.metrics.model_eval.evaluate_model`'s ``lfw`` suite, with the folder's files.

    Args:
        checkpoint_or_model: a checkpoint path or a model.
        root, pairs, landmarks, missing_landmarks: as :func:`score_lfw_folder`.
        out_dir: if given, write ``report.json`` and ``report.md`` there.
        landmark_source: what the result reports as ``landmarks_source`` (the command line
            passes ``"auto"`` after detecting); default the folder's own (``"sidecar"``,
            ``"centre"`` or None).
        config: a :class:`~facelab.metrics.model_eval.ModelEvalConfig`; only ``batch_size``,
            ``device`` and ``num_threads`` apply (``overrides`` replace them).

    Returns:
        ``{"lfw_folder", "pairs_file", "landmarks_file", "landmarks_source", "n_centre_landmarks"
        (images given the centre template), "n_pairs", "n_folds", "n_images",
        "model_name", "checkpoint", "step", "image_size", "resolution", "config",
        "lfw": {model_name: verify(...).to_dict()}, "time_s"}``.
    """
    cfg = dataclasses.replace(config or ModelEvalConfig(), **overrides)
    changed = [f.name for f in dataclasses.fields(cfg)
               if f.name not in FOLDER_FIELDS and getattr(cfg, f.name) != getattr(ModelEvalConfig(), f.name)]
    if changed:
        raise ValueError(f"{', '.join(changed)}: size or seed a SynthFaces suite; a folder is scored on its own pairs "
                         f"(only {', '.join(FOLDER_FIELDS)} apply)")
    cfg = cfg.resolved(FOLDER_PROFILE)
    start = time.perf_counter()
    folder = LFWFolder(root, pairs, landmarks, missing_landmarks)  # errors about the folder before the model loads
    with torch_threads(cfg.num_threads):
        model, _, info = _load(checkpoint_or_model, cfg.device)
        scored = _score(model, folder, cfg.batch_size, cfg.device)
    result = {"lfw_folder": str(folder.root), "pairs_file": str(folder.pairs_path),
              "landmarks_file": None if folder.landmarks_path is None else str(folder.landmarks_path),
              "landmarks_source": landmark_source or folder.landmark_source,
              "n_centre_landmarks": len(folder.centre_filled),
              "n_pairs": len(folder.pairs), "n_folds": folder.n_folds, "n_images": len(folder), **info,
              "image_size": list(_model_setting(model, "image_size")), "resolution": _model_setting(model, "resolution"),
              "config": {k: getattr(cfg, k) for k in FOLDER_FIELDS},
              "lfw": {info["model_name"]: scored.to_dict()}, "time_s": round(time.perf_counter() - start, 2)}
    if out_dir is not None:
        write_report(result, out_dir, lfw_folder_markdown(result))
    return result


def lfw_folder_markdown(result: dict) -> str:
    """Markdown of an :func:`evaluate_lfw_folder` result: a head line and the LFW table."""
    from facelab.metrics.report import baselines_markdown

    head = (f"**{result['model_name']}** ({result.get('checkpoint') or 'in-memory model'}, step {result.get('step')}) "
            f"on the LFW folder `{result['lfw_folder']}`: {result['n_pairs']} pairs of `{result['pairs_file']}` in "
            f"{result['n_folds']} folds, {result['n_images']} images, fed as "
            f"{result['image_size'][0]}x{result['image_size'][1]} px photos")
    source, n_centre = result.get("landmarks_source"), result.get("n_centre_landmarks", 0)
    if source is not None:
        head += f"; landmarks: {source}" + (f" ({n_centre} images on the centre template)"
                                            if n_centre and source != CENTRE else "")
    table = baselines_markdown({"lfw": result["lfw"]})  # titled with the pairs file's own number of folds
    return "\n\n".join([head, table, f"Time: {result['time_s']} s"]) + "\n"


def evaluate_lfw_folder_cli(checkpoint, root, pairs=None, landmarks=None, as_json: bool = False, out=None,
                            overrides: list[str] | None = None, missing_landmarks: str = "raise",
                            landmark_source: str | None = None) -> int:
    """``facelab eval model CHECKPOINT --lfw ROOT [--pairs F] [--landmarks F|centre|auto] [--json] [--out DIR] [--set K=V]``.

    ``landmarks``: a sidecar path, None (``ROOT/landmarks.json`` when present) or ``"centre"``;
    ``auto`` is resolved by the command line (``facelab.eval_cli``), which detects the landmarks
    and passes the written sidecar with ``missing_landmarks="centre"``.

    Prints the JSON result (``as_json``) or the Markdown report; returns the exit code 0.
    """
    from facelab.config import apply_overrides
    from facelab.metrics.report import write_json

    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    cfg = apply_overrides(ModelEvalConfig(), overrides)
    result = evaluate_lfw_folder(checkpoint, root, pairs, landmarks, out_dir=out, config=cfg,
                                 missing_landmarks=missing_landmarks, landmark_source=landmark_source)
    print(write_json(result, indent=None) if as_json else lfw_folder_markdown(result))
    return 0
