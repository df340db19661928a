"""One entry point for every morphable-model file facelab reads: :func:`load_morphable`.

The file's suffix picks the loader: ``.npz`` a facelab model (:meth:`MorphableModel.save`),
``.mat`` BFM2009, ``.h5`` BFM2017/2019, ``.bin`` a Surrey Face Model / eos file, ``.pkl``
FLAME. Each loader's own checks apply, and its errors name the file.

A ``.mat`` holding a MATLAB struct named ``model`` is 3DDFA's trimmed BFM (``BFM.mat``, the
model of 300W-LP; :func:`facelab.io.load_bfm_3ddfa`): BFM2009's ``01_MorphableModel.mat`` keeps
its arrays at the top level and has no such struct, so the variable list tells the two apart
without reading the arrays, and every BFM2009 file still goes to :func:`facelab.io.load_bfm2009`.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from facelab.io._util import existing_file
from facelab.io.bfm import load_bfm2009, load_bfm2017
from facelab.io.bfm3ddfa import is_bfm_3ddfa, load_bfm_3ddfa
from facelab.io.flame import load_flame
from facelab.io.landmark_mapping import landmark_indices
from facelab.io.sfm import load_sfm
from facelab.morphable.model import MorphableModel, load_npz

#: suffix -> (what the file is, the loader's name in facelab.io)
MORPHABLE_SUFFIXES = {
    ".npz": ("facelab morphable model (MorphableModel.save)", "load_npz"),
    ".mat": ("Basel Face Model 2009 (01_MorphableModel.mat), or 3DDFA's BFM.mat", "load_bfm2009"),
    ".h5": ("Basel Face Model 2017/2019", "load_bfm2017"),
    ".bin": ("Surrey Face Model / eos", "load_sfm"),
    ".pkl": ("FLAME generic_model.pkl", "load_flame"),
}
_LOADERS = {".mat": load_bfm2009, ".h5": load_bfm2017, ".bin": load_sfm, ".pkl": load_flame}


def load_morphable(path, landmarks=None, face_mask=None) -> MorphableModel:
    """Load a morphable model of any supported format, chosen by the file's suffix.

    Args:
        path: a ``.npz``, ``.mat``, ``.h5``, ``.bin`` or ``.pkl`` file (:data:`MORPHABLE_SUFFIXES`).
        landmarks: optional ``(68,)`` int vertex indices in iBUG order, ``-1`` where the model
            maps no vertex, or the path of a mapping file (eos's TOML ``ibug_to_sfm.txt`` or a
            JSON sidecar: :func:`facelab.io.read_landmark_mapping`); a ``.npz`` keeps its own
            (passing them for a ``.npz`` replaces them). A partial set shows in
            ``model.landmark_mask``; landmark fits and losses then use the mapped points only.
        face_mask: optional ``(V,)`` bool face region (same rule).

    Returns:
        :class:`~facelab.morphable.model.MorphableModel` in facelab's conventions (mm).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown suffix, or the loader's own error (naming the file).

    >>> import tempfile, os
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> p = build_synthfaces(SynthFacesConfig(resolution="quick")).save(os.path.join(tempfile.mkdtemp(), "m.npz"))
    >>> load_morphable(p).n_verts
    1353
    >>> _ = p.with_suffix(".txt").write_text("a mesh?")
    >>> load_morphable(p.with_suffix(".txt"))
    Traceback (most recent call last):
    ...
    ValueError: ...m.txt: unknown morphable-model suffix '.txt'; expected one of .npz (facelab morphable model ...
    >>> q = p.with_name("map.json"); _ = q.write_text('{"31": 10, "37": 20, "46": 30}')
    >>> m = load_morphable(p, landmarks=q)
    >>> int(m.landmark_mask.sum()), m.landmarks[30].item(), m.landmarks[0].item()
    (3, 10, -1)
    """
    path = existing_file(path, "morphable-model file")
    suffix = path.suffix.lower()
    if suffix not in MORPHABLE_SUFFIXES:
        known = ", ".join(f"{s} ({what})" for s, (what, _) in MORPHABLE_SUFFIXES.items())
        raise ValueError(f"{path}: unknown morphable-model suffix {suffix!r}; expected one of {known}")
    if suffix == ".mat" and is_bfm_3ddfa(path):
        return load_bfm_3ddfa(path, landmarks=landmarks, face_mask=face_mask)
    if suffix != ".npz":
        return _LOADERS[suffix](path, landmarks=landmarks, face_mask=face_mask)
    model = load_npz(path)
    changes, source = {}, landmarks if isinstance(landmarks, (str, Path)) else None
    if landmarks is not None:
        changes["landmarks"] = torch.as_tensor(landmark_indices(landmarks), dtype=torch.long).reshape(-1)
    if face_mask is not None:
        changes["face_mask"] = torch.as_tensor(face_mask, dtype=torch.bool).reshape(-1)
    try:
        return dataclasses.replace(model, **changes) if changes else model  # replace() validates the new fields
    except ValueError as err:
        if source is not None and str(err).startswith("landmarks"):  # name the mapping file
            raise ValueError(f"{source}: does not fit {path} ({err})") from None
        raise
