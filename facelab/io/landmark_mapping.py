"""Landmark mapping files: which model vertex each iBUG-68 point is, for models that map only some.

Two formats, told apart by the suffix (``.json`` is JSON, anything else eos's TOML):

* **eos** (``share/ibug_to_sfm.txt`` and its siblings): TOML with a ``[landmark_mappings]`` table
  of ``ibug_point = vertex_index`` lines, iBUG points numbered 1..68, vertices 0-based::

      [landmark_mappings]
      9 = 33      # chin bottom
      18 = 225    # right eyebrow outer corner

  Points without a line (eos leaves out the jaw contour, which it fits separately) are unmapped.
  Other tables in the file are ignored.
* **JSON sidecar**: either an object ``{"1": vertex, ..., "68": vertex}`` (keys the 1-based iBUG
  numbers, absent keys or ``null`` = unmapped) or a list of 68 entries in iBUG order, each a vertex
  index or ``null``.

:func:`read_landmark_mapping` returns facelab's ``(68,)`` landmark tensor with ``-1`` at the
unmapped points (:attr:`facelab.morphable.model.MorphableModel.landmark_mask`); the loaders'
``landmarks=`` accept such a file's path. Whether the vertices exist is checked against the model
when it is built (the file alone does not know the vertex count).

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import torch

from facelab.io._util import existing_file
from facelab.morphable.landmarks import N_LANDMARKS, UNMAPPED

__all__ = ["read_landmark_mapping", "MAPPING_TABLE"]

#: the TOML table of an eos mapping file
MAPPING_TABLE = "landmark_mappings"
#: the key of a ``key = value`` line: bare, or in single or double quotes (for error line numbers)
_KEY_LINE = re.compile(r"""^\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=""")


def read_landmark_mapping(path) -> torch.Tensor:
    """Read an eos TOML or JSON landmark mapping file (module docstring) into iBUG order.

    Args:
        path: the mapping file; ``.json`` is read as the JSON sidecar, any other suffix
            (eos ships ``.txt``) as TOML.

    Returns:
        ``(68,)`` long: the vertex of iBUG point ``k + 1`` at ``k``, ``-1`` where unmapped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not TOML/JSON, no ``[landmark_mappings]`` table, an iBUG number outside
            1..68, a point given twice, or a vertex that is not an integer >= 0. The message names
            the file and the line (TOML) or key/position (JSON).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "ibug_to_model.txt")
    >>> _ = open(p, "w").write("[landmark_mappings]\\n9 = 33  # chin\\n31 = 114\\n")
    >>> lm = read_landmark_mapping(p)
    >>> lm.shape, lm[8].item(), lm[30].item(), int((lm >= 0).sum())
    (torch.Size([68]), 33, 114, 2)
    >>> _ = open(p, "w").write("[landmark_mappings]\\n9 = 33\\n69 = 7\\n")
    >>> read_landmark_mapping(p)
    Traceback (most recent call last):
    ...
    ValueError: ...ibug_to_model.txt: line 3: iBUG point 69 outside 1..68
    """
    path = existing_file(path, "landmark mapping file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable text file ({err})") from None
    entries = _read_json(path, text) if path.suffix.lower() == ".json" else _read_toml(path, text)
    out = np.full(N_LANDMARKS, UNMAPPED, dtype=np.int64)
    for where, point, vertex in entries:
        if vertex is None:
            continue
        if isinstance(vertex, bool) or not isinstance(vertex, int):
            raise ValueError(f"{path}: {where}: vertex {vertex!r} of iBUG point {point} is not an integer")
        if vertex < 0:
            raise ValueError(f"{path}: {where}: vertex {vertex} of iBUG point {point} is negative")
        out[point - 1] = vertex
    return torch.from_numpy(out)


def _ibug_number(path: Path, where: str, key: str) -> int:
    try:
        point = int(key)
    except ValueError:
        raise ValueError(f"{path}: {where}: key {key!r} is not an iBUG point number (1..{N_LANDMARKS})") from None
    if not 1 <= point <= N_LANDMARKS:
        raise ValueError(f"{path}: {where}: iBUG point {point} outside 1..{N_LANDMARKS}")
    return point


def _read_toml(path: Path, text: str) -> list[tuple[str, int, object]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message has the line (a repeated key included)
        raise ValueError(f"{path}: not a TOML landmark mapping ({err})") from None
    table = doc.get(MAPPING_TABLE)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: no [{MAPPING_TABLE}] table of 'ibug_point = vertex_index' lines")
    lines = _table_key_lines(text)
    entries, seen = [], {}
    for key, vertex in table.items():
        where = f"line {lines.get(key, '?')}"
        point = _ibug_number(path, where, key)
        if point in seen:  # "09" and "9" are different TOML keys but the same point
            raise ValueError(f"{path}: {where}: iBUG point {point} is mapped twice (also {seen[point]})")
        seen[point] = where
        entries.append((where, point, vertex))
    return entries


def _table_key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each key in the mapping table (for messages; tomllib keeps no positions)."""
    lines, inside = {}, False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped.split("#")[0].strip() == f"[{MAPPING_TABLE}]"
            continue
        match = _KEY_LINE.match(line) if inside else None
        if match:
            lines.setdefault(next(g for g in match.groups() if g is not None), number)
    return lines


def _read_json(path: Path, text: str) -> list[tuple[str, int, object]]:
    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"{path}: key {repeated[0]!r} appears twice")
        return dict(pairs)

    try:
        doc = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if isinstance(doc, list):
        if len(doc) != N_LANDMARKS:
            raise ValueError(f"{path}: a list mapping needs {N_LANDMARKS} entries (vertex or null), got {len(doc)}")
        return [(f"list position {k + 1}", k + 1, v) for k, v in enumerate(doc)]
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object {{\"1\": vertex, ...}} or a list of {N_LANDMARKS} "
                         f"vertices, got {type(doc).__name__}")
    entries, seen = [], {}
    for key, vertex in doc.items():
        where = f"key {key!r}"
        point = _ibug_number(path, where, key)
        if point in seen:
            raise ValueError(f"{path}: {where}: iBUG point {point} is mapped twice (also {seen[point]})")
        seen[point] = where
        entries.append((where, point, vertex))
    return entries


def landmark_indices(landmarks) -> torch.Tensor | None:
    """``landmarks=`` of a loader as a ``(68,)`` long tensor: a mapping file's path is read.

    None stays None; arrays pass through unchanged (the model checks them). For the loaders.
    """
    if isinstance(landmarks, (str, Path)):
        return read_landmark_mapping(landmarks)
    return landmarks
