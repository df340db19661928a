"""Fitted training targets: the ``targets.npz`` of ``facelab fit``, written and read back per image.

Book chapter: ``book/04_fitting.ipynb`` ("Fitting a 3DMM to a photo collection").

Liu et al. 2018 train their encoder on coefficients obtained by fitting one 3DMM identity
to all photos of each subject. ``facelab fit`` (:func:`facelab.fitting.fit_collection_study`,
:func:`facelab.fitting.fit_collection`) stores such a fit with :func:`save_fitted_targets`;
:func:`load_fitted_targets` turns it into per-image targets aligned with a collection
(a :class:`~facelab.data.PhotoCollection`, a :class:`~facelab.data.SavedCollection` or a folder
of photos, :class:`~facelab.data.ImageFolderIdentities`),
after checking that the file was fitted to that collection.

Layout of ``targets.npz`` (``N`` images, ``G`` identities, all arrays plain numpy)::

    format, version        "facelab-fitted-targets", 1
    suite_config           the collection's SuiteConfig as JSON (a 0-d unicode array)
    n_images               () int, N
    labels, identity       (N,) int, suite label and world identity id of each image
    alpha_exp, pose, sh    (N, K_exp), (N, 6), (N, 27): per-image fit (collection order)
    photo_rmse, residual_px  (N,): per-image fit quality (colour RMSE, landmark RMSE in px)
    alpha_id, beta         (G, K_id), (G, K_alb): one shape and albedo per identity
    identity_labels        (G,) int, the label of each row of alpha_id
    morphable              version 2 only: the model file fitted (``facelab fit ROOT --set morphable=PATH``),
                           JSON of :func:`facelab.models.morphable_record.morphable_record`
                           (``path``, content ``sha256``, ``name``, ``n_verts``, ``n_shape``, ``n_exp``);
                           ``path`` is relative to this file's folder when the model lies inside
                           that folder or beside it (under its parent), with ``absolute_path``
                           the path at fit time; else absolute

A file without ``morphable`` (version 1) holds coefficients of SynthFaces at the ``resolution``
of its ``suite_config``; a file with it (version 2, so that older readers refuse it rather than
read its coefficients in SynthFaces) holds coefficients of that file's model, which
:func:`fitted_model` and :func:`load_fitted_targets` re-read and check against the recorded hash.
A relative ``path`` is resolved against the targets file's folder, so a folder moved together
with its model still reads; when nothing is there, ``absolute_path`` is tried (the hash decides).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from facelab.morphable.model import MorphableModel

__all__ = ["CollectionView", "save_fitted_targets", "load_fitted_targets", "fitted_model", "portable_record",
           "recorded_model_path"]

TARGETS_FORMAT = "facelab-fitted-targets"
TARGETS_VERSION = 1
#: the version of a file that records the morphable-model file it was fitted with (``morphable``)
TARGETS_VERSION_MORPHABLE = 2
#: per-image arrays of ``targets.npz`` (collection order)
PER_IMAGE_KEYS = ("labels", "identity", "alpha_exp", "pose", "sh", "photo_rmse", "residual_px")
#: per-identity arrays of ``targets.npz``
PER_IDENTITY_KEYS = ("alpha_id", "beta", "identity_labels")
#: suite-config keys that change an image's pixels or framing but not the subject or the
#: expression it shows: targets fitted at 64 px also describe the same photos rendered at 112x96
CONFIG_KEYS_IGNORED = ("profile", "backend", "render_lod", "image_size")
#: SynthFaces model resolution fitted to a folder of photos unless told otherwise (``CollectionFitConfig``'s default)
FOLDER_RESOLUTION = "quick"


class CollectionView:
    """What fitting and target loading need from a photo collection, whichever kind it is.

    Args:
        collection: a :class:`~facelab.data.PhotoCollection` (generated on the fly), a
            :class:`~facelab.data.SavedCollection` (a folder written by ``facelab synth``) or an
            :class:`~facelab.data.ImageFolderIdentities` (photos in one folder per identity).
        resolution: image folders only: the SynthFaces model resolution to fit
            (``quick``, ``default``, ``large``); suites carry their own.
        model: image folders only: a :class:`MorphableModel` to fit instead of SynthFaces (e.g. a
            file read with :func:`facelab.io.load_morphable`; ``resolution`` is then unused).
            A generated or saved suite refuses one: its true shapes are SynthFaces'.

    Attributes:
        name: how error messages call the collection.
        model: the suite's :class:`MorphableModel` (an image folder: ``model``, else SynthFaces at ``resolution``).
        config: the suite config as a JSON-ready dict (an image folder:
            :meth:`~facelab.data.ImageFolderIdentities.describe`, and ``resolution`` when fitting SynthFaces).
        labels: ``(N,)`` long, identity label of each image.
        identity: ``(N,)`` long, world identity id of each image (an image folder: the label).
        has_truth: whether :meth:`truth` knows the true shapes (SynthFaces suites only).

    >>> from facelab.data import make_suite
    >>> view = CollectionView(make_suite("webface", n_identities=2, images_per_identity=3, resolution="quick"))
    >>> len(view), view.labels.tolist(), view.config["suite"]
    (6, [0, 0, 0, 1, 1, 1], 'webface')
    """

    def __init__(self, collection, resolution: str | None = None, model: MorphableModel | None = None):
        from facelab.data import ImageFolderIdentities, PhotoCollection, SavedCollection

        if model is not None and not isinstance(model, MorphableModel):
            raise TypeError(f"model: expected a MorphableModel or None, got {type(model).__name__}")
        if model is not None and isinstance(collection, (PhotoCollection, SavedCollection)):
            raise ValueError(f"morphable: {collection.root if isinstance(collection, SavedCollection) else 'a generated suite'} "
                             f"is fitted with its own SynthFaces model (its true shapes are SynthFaces'); another "
                             "morphable model applies to photos in identity folders only")
        self.has_truth = True
        self.require_landmarks = lambda what: None  # suites always carry their landmarks
        if isinstance(collection, PhotoCollection):
            self.name = repr(collection)
            self.model = collection.model
            self.config = _json_ready(dataclasses.asdict(collection.config))
            self.labels = collection.table.label.long()
            self.identity = collection.table.identity.long()
            self._batch = collection.batch
            self._truth = lambda ids: collection.identities(ids)["shape"]
        elif isinstance(collection, SavedCollection):
            from facelab.morphable import SynthFacesConfig, build_synthfaces, load_world

            self.name = str(collection.root)
            self.config = _json_ready(collection.manifest.get("config") or {})
            if "resolution" not in self.config:
                raise ValueError(f"{collection.root}: manifest has no suite config with a 'resolution'; cannot build its model")
            world_cfg = SynthFacesConfig(resolution=self.config["resolution"])
            self.model = build_synthfaces(world_cfg)
            world = load_world(world_cfg)
            self.labels = _saved_field(collection, "label").long()
            self.identity = _saved_field(collection, "identity").long()
            self._batch = lambda index: _saved_batch(collection, index)
            # the folder stores no per-vertex truth; it is a pure function of the world identity
            self._truth = lambda ids: world.identity(ids)["shape"]
        elif isinstance(collection, ImageFolderIdentities):
            from facelab.morphable import SynthFacesConfig, build_synthfaces

            self.name = str(collection.root)
            if model is not None:  # the model is recorded beside the config (save_fitted_targets' morphable)
                self.config = _json_ready(collection.describe())
                self.model = model
            else:
                resolution = FOLDER_RESOLUTION if resolution is None else resolution
                self.config = _json_ready({**collection.describe(), "resolution": resolution})
                self.model = build_synthfaces(SynthFacesConfig(resolution=resolution))
            self.labels = collection.labels.clone()
            self.identity = collection.labels.clone()  # photos of real people: the label is all there is
            self._batch = collection.batch
            self.has_truth = False
            self._truth = None
            self.require_landmarks = collection.require_landmarks
        else:
            raise TypeError(f"collection: expected a PhotoCollection, SavedCollection or ImageFolderIdentities, "
                            f"got {type(collection).__name__}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images ``index`` ``(B,)``: ``image (B, 3, H, W)`` [0, 1], ``landmarks2d (B, 68, 2)`` px,
        ``label (B,)``, ``occlusion_mask (B, 1, H, W)`` (and more for a generated suite)."""
        return self._batch(torch.as_tensor(index, dtype=torch.long))

    def truth(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` float, mm: the true neutral shape of world identities ``ids`` ``(B,)``."""
        if not self.has_truth:
            raise ValueError(f"{self.name}: a folder of photos holds no true shapes")
        return self._truth(torch.as_tensor(ids, dtype=torch.long)).to(self.model.device, self.model.dtype)


def _json_ready(config: dict) -> dict:
    """``config`` as it reads back from JSON (tuples become lists), so two configs compare equal."""
    return json.loads(json.dumps(config, default=str))


def _saved_field(collection, key: str) -> torch.Tensor:
    arrays = getattr(collection, "_arrays", None)  # the loaded shards; avoids building N item dicts
    if arrays is not None and key in arrays:
        return torch.from_numpy(np.asarray(arrays[key]))
    return torch.stack([collection[i][key] for i in range(len(collection))])


def _saved_batch(collection, index: torch.Tensor) -> dict[str, torch.Tensor]:
    items = [collection[int(i)] for i in index]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


# ------------------------------------------------------------------ writing
def save_fitted_targets(path: str | Path, targets: dict) -> Path:
    """Write the targets of :func:`~facelab.fitting.fit_collection` / ``fit_collection_study``.

    Args:
        path: the ``.npz`` file to write (its folder is created).
        targets: the per-image (:data:`PER_IMAGE_KEYS`, ``N`` rows in collection order) and
            per-identity (:data:`PER_IDENTITY_KEYS`) tensors, and ``suite_config`` (a JSON str);
            optionally ``morphable``, the record of the model file fitted (a dict or its JSON str,
            :func:`facelab.models.morphable_record.morphable_record`): the file is then written as
            version :data:`TARGETS_VERSION_MORPHABLE` (without it, version :data:`TARGETS_VERSION`),
            with the model's path made relative to ``path``'s folder where :func:`portable_record` says.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    >>> import tempfile
    >>> t = {k: torch.zeros(2) for k in PER_IMAGE_KEYS + PER_IDENTITY_KEYS}
    >>> t.update(alpha_id=torch.zeros(1, 3), alpha_exp=torch.zeros(2, 4), suite_config="{}")
    >>> p = save_fitted_targets(Path(tempfile.mkdtemp()) / "targets.npz", t)
    >>> int(np.load(p)["n_images"]), int(np.load(p)["version"])
    (2, 1)
    >>> t["morphable"] = {"path": "/models/other.npz", "sha256": "0" * 64}
    >>> int(np.load(save_fitted_targets(p.with_name("other.npz"), t))["version"])
    2
    """
    missing = [k for k in PER_IMAGE_KEYS + PER_IDENTITY_KEYS + ("suite_config",) if k not in targets]
    if missing:
        raise ValueError(f"targets: missing {missing}")
    n = int(targets["labels"].shape[0])
    bad = [k for k in PER_IMAGE_KEYS if int(targets[k].shape[0]) != n]
    if bad:
        raise ValueError(f"targets: {bad} do not have one row per image ({n} labels)")
    arrays = {k: targets[k].detach().cpu().numpy() for k in PER_IMAGE_KEYS + PER_IDENTITY_KEYS}
    version = TARGETS_VERSION
    if targets.get("morphable") is not None:
        record = targets["morphable"]
        record = json.loads(record) if isinstance(record, str) else dict(record)
        _check_record(record, "targets['morphable']")
        arrays["morphable"] = np.array(json.dumps(portable_record(record, path)))
        version = TARGETS_VERSION_MORPHABLE
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, format=np.array(TARGETS_FORMAT), version=np.array(version), n_images=np.array(n),
                 suite_config=np.array(str(targets["suite_config"])), **arrays)
    return path


def portable_record(record: dict, targets_path) -> dict:
    """``record`` as a targets file at ``targets_path`` stores it: a model file inside the targets'
    folder or beside it (anywhere under the folder's parent) gets ``path`` relative to the targets'
    folder and ``absolute_path`` its absolute path, so that the folder can move together with its
    model; a model elsewhere keeps its absolute ``path``. A relative ``path`` is left as it is.

    >>> portable_record({"path": "/data/model.npz", "sha256": "0"}, "/data/fit/targets.npz")["path"]
    '../model.npz'
    >>> portable_record({"path": "/models/bfm.npz", "sha256": "0"}, "/data/fit/targets.npz")["path"]
    '/models/bfm.npz'
    """
    model = Path(record["path"])
    if not model.is_absolute():
        return dict(record)
    folder = Path(targets_path).resolve().parent
    model = model.resolve()
    if not model.is_relative_to(folder.parent):
        return dict(record)
    return {**record, "path": os.path.relpath(model, folder), "absolute_path": str(model)}


def recorded_model_path(targets_path, record: dict) -> Path:
    """Where the model file of a targets file's ``record`` is: an absolute ``path`` as it is; a
    relative one resolved against the targets file's folder, or, when no file is there, the
    recorded ``absolute_path`` if a file is there (the content hash is checked by the caller)."""
    model = Path(record["path"])
    if model.is_absolute():
        return model
    model = Path(os.path.normpath(Path(targets_path).resolve().parent / model))
    fallback = record.get("absolute_path")
    if not model.is_file() and fallback and Path(fallback).is_file():
        return Path(fallback)
    return model


def _check_record(record, where: str) -> None:
    from facelab.models.morphable_record import RECORD_KEYS

    if not isinstance(record, dict) or not set(RECORD_KEYS) <= set(record):
        raise ValueError(f"{where}: expected a morphable-model record with {list(RECORD_KEYS)}, got {record!r}")


# ------------------------------------------------------------------ reading
def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fitted-targets file (write one with `facelab fit`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{path}: corrupt or unreadable fitted-targets file ({err})") from None
    fmt = str(data.get("format", ""))
    if fmt != TARGETS_FORMAT:
        raise ValueError(f"{path}: format {fmt!r}, expected {TARGETS_FORMAT!r} (not written by `facelab fit`?)")
    version = int(data.get("version", -1))
    if version not in (TARGETS_VERSION, TARGETS_VERSION_MORPHABLE):
        raise ValueError(f"{path}: version {version} not supported (reads {TARGETS_VERSION} and {TARGETS_VERSION_MORPHABLE})")
    if (version == TARGETS_VERSION_MORPHABLE) != ("morphable" in data):
        raise ValueError(f"{path}: corrupt fitted-targets file, version {version} "
                         f"{'without' if 'morphable' not in data else 'with'} a morphable-model record")
    missing = [k for k in PER_IMAGE_KEYS + PER_IDENTITY_KEYS + ("n_images", "suite_config") if k not in data]
    if missing:
        raise ValueError(f"{path}: corrupt fitted-targets file, missing arrays {missing}")
    n, g = int(data["n_images"]), data["alpha_id"].shape[0]
    for key in PER_IMAGE_KEYS:
        if data[key].shape[:1] != (n,):
            raise ValueError(f"{path}: corrupt fitted-targets file, {key} has shape {data[key].shape}, expected {n} rows")
    if data["alpha_id"].ndim != 2 or data["alpha_exp"].ndim != 2 or data["identity_labels"].shape != (g,):
        raise ValueError(f"{path}: corrupt fitted-targets file, alpha_id {data['alpha_id'].shape}, "
                         f"alpha_exp {data['alpha_exp'].shape}, identity_labels {data['identity_labels'].shape}")
    return data


def _fitted_record(path: Path, data: dict) -> dict | None:
    """The morphable-model record of a version-2 targets file (None: SynthFaces at its resolution)."""
    if "morphable" not in data:
        return None
    try:
        record = json.loads(str(data["morphable"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: corrupt fitted-targets file, morphable is not JSON ({err})") from None
    _check_record(record, f"{path}: corrupt fitted-targets file, morphable")
    return record


def _recorded_model(path: Path, record: dict, model: MorphableModel | None = None) -> MorphableModel:
    """The model file ``record`` names (or ``model``, already in memory), checked against the recorded hash."""
    from facelab.io.models import load_morphable

    where = recorded_model_path(path, record)
    if model is None:
        try:
            model = load_morphable(where)
        except FileNotFoundError:
            also = f" (recorded as {record['path']} beside it)" if str(where) != record["path"] else ""
            raise FileNotFoundError(f"{where}: the morphable model {path} was fitted with{also} (sha256 "
                                    f"{record['sha256']}) is no longer there; put the file back, or fit again "
                                    "with `facelab fit ROOT --set morphable=PATH`") from None
        have, what = model.content_sha256(), f"{where}: the morphable model now has"
    else:
        have, what = model.content_sha256(), "model: the given morphable model has"
    if have != record["sha256"]:
        raise ValueError(f"{what} sha256 {have}, but {path} was fitted with {where} of sha256 "
                         f"{record['sha256']}; use the model it was fitted with, or fit again")
    return model


def _fitted_view(path: Path, data: dict, collection, model: MorphableModel | None = None) -> CollectionView:
    """The :class:`CollectionView` of ``collection`` with the model ``data`` was fitted with."""
    record = _fitted_record(path, data)
    if record is None:
        return CollectionView(collection, resolution=_fitted_resolution(data))
    return CollectionView(collection, model=_recorded_model(path, record, model))


def _fitted_resolution(data: dict) -> str | None:
    """The model resolution a targets file was fitted with (None when its config does not say)."""
    try:
        fitted = json.loads(str(data["suite_config"]))
    except json.JSONDecodeError:
        return None  # _check_belongs names the corrupt config
    return fitted.get("resolution") if isinstance(fitted, dict) else None


def _check_belongs(path: Path, data: dict, view: CollectionView) -> None:
    n = int(data["n_images"])
    if n != len(view):
        raise ValueError(f"{path}: fitted to {n} images, but the collection {view.name} has {len(view)}")
    for key, have in (("labels", view.labels), ("identity", view.identity)):
        diff = np.flatnonzero(data[key] != have.cpu().numpy())
        if diff.size:
            i = int(diff[0])
            raise ValueError(f"{path}: {key} differ from the collection {view.name} at {diff.size} images, "
                             f"first image {i}: {data[key][i]} in the file, {int(have[i])} in the collection")
    try:
        fitted = json.loads(str(data["suite_config"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: corrupt fitted-targets file, suite_config is not JSON ({err})") from None
    keys = (set(fitted) | set(view.config)) - set(CONFIG_KEYS_IGNORED)
    differ = sorted(k for k in keys if fitted.get(k) != view.config.get(k))
    if differ:
        detail = ", ".join(f"{k}: {fitted.get(k)!r} in the file, {view.config.get(k)!r} in the collection" for k in differ)
        raise ValueError(f"{path}: fitted to another suite config than {view.name} ({detail})")


def _pad(values: np.ndarray, k: int, what: str, path: Path) -> torch.Tensor:
    """``(R, k)`` float32: ``values`` with zero columns appended (components left unfitted)."""
    if values.shape[1] > k:
        raise ValueError(f"{path}: {what} has {values.shape[1]} components, the model only {k} (another model resolution?)")
    out = torch.zeros(values.shape[0], k, dtype=torch.float32)
    out[:, : values.shape[1]] = torch.from_numpy(values.astype(np.float32))
    return out


def fitted_model(path: str | Path, collection) -> MorphableModel:
    """The morphable model whose coefficients a ``targets.npz`` holds: the suite's own model, or for a
    folder of photos the model file the targets record (``facelab fit ROOT --set morphable=PATH``),
    re-read and checked against its recorded content hash, else SynthFaces at the resolution the file
    records (``facelab fit --set resolution=``).

    Raises the errors of :func:`load_fitted_targets` for a missing or corrupt targets file, and
    ``FileNotFoundError`` / ``ValueError`` naming the model file when it is gone or its content
    changed since the fit (with both hashes).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> t = {k: torch.zeros(2) for k in PER_IMAGE_KEYS + PER_IDENTITY_KEYS}
    >>> t.update(alpha_id=torch.zeros(1, 3), alpha_exp=torch.zeros(2, 4), identity_labels=torch.zeros(1), suite_config="{}")
    >>> p = save_fitted_targets(Path(tempfile.mkdtemp()) / "targets.npz", t)
    >>> suite = make_suite("webface", n_identities=2, images_per_identity=1, resolution="quick")
    >>> fitted_model(p, suite).n_verts == suite.model.n_verts
    True
    """
    path = Path(path)
    return _fitted_view(path, _read(path), collection).model


def load_fitted_targets(path: str | Path, collection, model: MorphableModel | None = None) -> dict[str, torch.Tensor]:
    """Per-image training targets from a ``targets.npz`` of ``facelab fit``, aligned with ``collection``.

    Row ``i`` describes image ``i`` of ``collection`` (the order of
    ``collection.batch(torch.arange(N))``, or of ``collection[i]`` for a saved folder). The
    file must have been fitted to this collection: same image count, labels and world
    identities per image, and the same suite config up to :data:`CONFIG_KEYS_IGNORED`.

    Args:
        path: a ``targets.npz`` written by :func:`save_fitted_targets` (``facelab fit``).
        collection: a :class:`~facelab.data.PhotoCollection`, :class:`~facelab.data.SavedCollection`
            or :class:`~facelab.data.ImageFolderIdentities` (fitted with the model the file records:
            :func:`fitted_model`).
        model: the morphable model the coefficients belong to (default: :func:`fitted_model`'s). For
            a file that records a model file (version 2) it must have that file's content hash.

    Returns:
        dict of tensors in the model's dtype, on its device:
        ``alpha_id (N, K_id)`` and ``alpha_exp (N, K_exp)`` unstandardised coefficients
        (zero past the fitted components; images of one identity share ``alpha_id``),
        ``shape_identity (N, V, 3)`` mm = ``model.shape(alpha_id)`` (neutral) and
        ``shape (N, V, 3)`` mm = ``shape_identity + model.expression_offset(alpha_exp)``.
        Memory: ``2 N V 3`` floats (about 100 MB for 800 images of the default mesh).

    Raises:
        FileNotFoundError: ``path`` does not exist, or the model file it records is gone (named).
        ValueError: the file is corrupt, or was fitted to another collection or model
            (the message names the file and the mismatch; for a recorded model file, both hashes).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> from facelab.fitting import CollectionFitConfig, fit_collection
    >>> suite = make_suite("webface", n_identities=2, images_per_identity=2, image_size=32, resolution="quick")
    >>> targets, _ = fit_collection(suite, CollectionFitConfig(n_steps=1))
    >>> path = save_fitted_targets(Path(tempfile.mkdtemp()) / "targets.npz", targets)
    >>> t = load_fitted_targets(path, suite)
    >>> t["shape"].shape == (4, suite.model.n_verts, 3), bool(torch.equal(t["alpha_id"][0], t["alpha_id"][1]))
    (True, True)
    """
    path = Path(path)
    if model is not None and not isinstance(model, MorphableModel):
        raise TypeError(f"model: expected a MorphableModel or None, got {type(model).__name__}")
    data = _read(path)
    view = _fitted_view(path, data, collection, model)
    _check_belongs(path, data, view)
    m = model if model is not None else view.model
    alpha_id_g = _pad(data["alpha_id"], m.n_shape, "alpha_id", path)
    alpha_exp = _pad(data["alpha_exp"], m.n_exp, "alpha_exp", path)
    rows = {int(label): r for r, label in enumerate(data["identity_labels"])}
    unfitted = sorted(set(int(v) for v in np.unique(data["labels"])) - set(rows))
    if unfitted:
        raise ValueError(f"{path}: corrupt fitted-targets file, no alpha_id row for labels {unfitted[:5]}")
    group = torch.tensor([rows[int(v)] for v in data["labels"]], dtype=torch.long)
    dev, dt = m.device, m.dtype
    identity_shapes = m.shape(alpha_id_g.to(dev, dt))  # (G, V, 3): one neutral face per identity
    alpha_exp = alpha_exp.to(dev, dt)
    shape_identity = identity_shapes[group.to(dev)]
    return {
        "alpha_id": alpha_id_g.to(dev, dt)[group.to(dev)],
        "alpha_exp": alpha_exp,
        "shape_identity": shape_identity,
        "shape": shape_identity + m.expression_offset(alpha_exp),
    }
