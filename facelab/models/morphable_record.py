"""What a checkpoint records of the morphable-model file a network was built with, and the check on reload.

A recipe trained with ``morphable=PATH`` (any file :func:`facelab.io.load_morphable` reads)
stores :func:`morphable_record` in its checkpoints' model config under ``"morphable"``; the
model builder re-reads the file with :func:`recorded_morphable`, which refuses a file whose
content changed since (:meth:`~facelab.morphable.model.MorphableModel.content_sha256`) or that
is gone. Used by the ``"liu2018"``, ``"sir"`` and ``"gao2020"`` builders (Gao et al.'s adds the
hash of the model resampled onto its grid, :func:`facelab.models.gao2020.gao2020_morphable_record`).
The scorers ask :func:`network_morphable` for the mesh such a network outputs, and
:func:`require_synthfaces_mesh` before scoring its meshes against a SynthFaces suite's truth.
"""

from __future__ import annotations

from pathlib import Path

from facelab.morphable.model import MorphableModel

#: the keys a record must hold to be checked
RECORD_KEYS = ("path", "sha256")


def morphable_record(morphable: MorphableModel, path) -> dict:
    """What a checkpoint's config records of a morphable model read from ``path``.

    ``{"path": absolute path, "sha256": MorphableModel.content_sha256(), "name", "n_verts", "n_shape", "n_exp"}``:
    :func:`recorded_morphable` re-reads ``path`` and refuses a file whose content changed.

    >>> import tempfile
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> rec = morphable_record(mm, mm.save(tempfile.mkdtemp() + "/m.npz"))
    >>> rec["sha256"] == mm.content_sha256(), rec["n_verts"], rec["n_shape"], rec["n_exp"]
    (True, 1353, 80, 30)
    """
    if not isinstance(morphable, MorphableModel):
        raise TypeError(f"morphable: expected a MorphableModel, got {type(morphable).__name__}")
    return {"path": str(Path(path).resolve()), "sha256": morphable.content_sha256(), "name": morphable.name,
            "n_verts": morphable.n_verts, "n_shape": morphable.n_shape, "n_exp": morphable.n_exp}


def recorded_morphable(record: dict, morphable: MorphableModel | None = None) -> MorphableModel:
    """The model a config's ``morphable`` record names: ``morphable`` if given, else re-read from the
    recorded path; either must have the recorded content hash.

    Raises:
        FileNotFoundError: the recorded file is gone (the message names it).
        ValueError: a malformed record, or a model whose content hash differs from the record.

    >>> import tempfile
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> rec = morphable_record(mm, mm.save(tempfile.mkdtemp() + "/m.npz"))
    >>> recorded_morphable(rec).content_sha256() == rec["sha256"]
    True
    """
    from facelab.io.models import load_morphable

    if not isinstance(record, dict) or not set(RECORD_KEYS) <= set(record):
        raise ValueError(f"config['morphable']: expected a dict with 'path' and 'sha256', got {record!r}")
    if morphable is None:
        try:
            morphable = load_morphable(record["path"])
        except FileNotFoundError:
            raise FileNotFoundError(f"{record['path']}: the morphable model this network was trained with "
                                    f"(sha256 {record['sha256']}) is no longer there; put the file back to "
                                    "rebuild the network") from None
    have = morphable.content_sha256()
    if have != record["sha256"]:
        raise ValueError(f"{record['path']}: the morphable model now has sha256 {have}, but the network was "
                         f"trained with sha256 {record['sha256']} (the file changed since training); "
                         "restore the model it was trained with")
    return morphable


def _network_n_verts(record: dict, synthfaces_n_verts: int) -> int:
    # Gao et al.'s decoders run on the SynthFaces grid: a recorded file of another mesh was resampled onto it
    return synthfaces_n_verts if record.get("resampled") else int(record["n_verts"])


def network_morphable(model_config: dict, resolution: str) -> MorphableModel | None:
    """The morphable model whose mesh a network outputs, from its checkpoint's ``model_config``:
    None without a ``morphable`` record (SynthFaces at ``resolution``, the suites' own); else the
    recorded file (:func:`recorded_morphable`), resampled onto the SynthFaces grid of ``resolution``
    as Gao et al.'s recipe did when the record holds a ``network_sha256``
    (:func:`facelab.models.gao2020.gao2020_morphable_record`), and checked against that hash.

    Raises:
        FileNotFoundError, ValueError: as :func:`recorded_morphable`; a resampled model whose hash
            is not the recorded ``network_sha256``.
    """
    record = model_config.get("morphable") if isinstance(model_config, dict) else None
    if record is None:
        return None
    source = recorded_morphable(record)
    if "network_sha256" not in record:
        return source
    from facelab.morphable.resample import grid_morphable

    network = grid_morphable(source, resolution)
    if network.content_sha256() != record["network_sha256"]:
        raise ValueError(f"{record['path']}: resampled onto the {resolution!r} grid it has sha256 "
                         f"{network.content_sha256()}, but the network was trained on sha256 {record['network_sha256']}")
    return network


def require_synthfaces_mesh(model_config: dict, resolution: str, checkpoint, what: str) -> None:
    """Refuse to score a network's meshes against a SynthFaces suite's true shapes unless they have
    the vertices of SynthFaces at ``resolution`` (the suite's truth, and the triangles and landmarks
    the scorer uses, are that mesh's).

    A network without a ``morphable`` record outputs SynthFaces' mesh; one trained with
    ``morphable=PATH`` outputs that file's mesh (Gao et al.'s: the SynthFaces grid, resampled).

    Args:
        model_config: the checkpoint's ``model_config``. resolution: the network's SynthFaces resolution.
        checkpoint: the checkpoint's path (named in the error). what: the scoring asked for, e.g. ``"--suite micc"``.

    Raises:
        ValueError: the vertex counts differ (names the checkpoint, the model file and both counts).

    >>> require_synthfaces_mesh({"morphable": {"path": "/m/bfm.npz", "sha256": "0", "n_verts": 53215}},
    ...                         "quick", "run/last.pt", "--suite micc")
    Traceback (most recent call last):
    ...
    ValueError: run/last.pt: the network was trained with the morphable model /m/bfm.npz and outputs meshes of 53215 vertices, ...
    """
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    record = model_config.get("morphable") if isinstance(model_config, dict) else None
    if record is None:
        return
    synthfaces = build_synthfaces(SynthFacesConfig(resolution=resolution)).n_verts
    have = _network_n_verts(record, synthfaces)
    if have != synthfaces:
        raise ValueError(f"{checkpoint}: the network was trained with the morphable model {record['path']} and outputs "
                         f"meshes of {have} vertices, but {what} scores them against true shapes on the SynthFaces mesh "
                         f"of resolution {resolution!r} ({synthfaces} vertices), by that mesh's vertex order, "
                         "triangles and landmarks; score it on real "
                         "scans instead (--micc ROOT), or its identity embeddings alone (--suite lfw, --lfw ROOT)")
