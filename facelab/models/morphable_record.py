"""What a checkpoint records of the morphable-model file a network was built with, and the check on reload.

A recipe trained with ``morphable=PATH`` (any file :func:`facelab.io.load_morphable` reads)
stores :func:`morphable_record` in its checkpoints' model config under ``"morphable"``; the
model builder re-reads the file with :func:`recorded_morphable`, which refuses a file whose
content changed since (:meth:`~facelab.morphable.model.MorphableModel.content_sha256`) or that
is gone. Used by the ``"liu2018"``, ``"sir"`` and ``"gao2020"`` builders (Gao et al.'s adds the
hash of the model resampled onto its grid, :func:`facelab.models.gao2020.gao2020_morphable_record`).
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
