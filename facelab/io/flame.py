"""FLAME ``generic_model.pkl`` loader (Li et al. 2017), without chumpy.

The official pickle was written with Python 2 and chumpy. It is read with
``encoding="latin1"`` by a restricted unpickler: classes from ``chumpy.*`` become
:class:`ChumpyStub` objects that keep the pickled state and expose the array (a
chumpy ``Ch`` leaf pickles its value as the ``x`` entry of its ``__dict__``);
``scipy.sparse`` matrices (``J_regressor``) and numpy arrays load normally; any
other class is refused, so a pickle cannot run arbitrary code.

Keys used: ``v_template (V, 3)`` metres, ``f (F, 3)`` 0-based, ``shapedirs
(V, 3, 300 + 100)`` (identity then expression), and kept in :func:`read_flame_pickle`'s
output: ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``.

Conversion to facelab (book chapter ``book/02_morphable_models.ipynb``): metres -> mm
(x1000); FLAME's axes are facelab's (y up, z toward the camera, x = subject's left).
FLAME's ``shapedirs`` are *not* orthonormal: they are principal directions already
scaled by their standard deviations, with standard-normal coefficients ``beta``.
Each block ``B (3V, K)`` (rows ``3*v + c``) is replaced by its thin SVD
``B = U S W^T``: ``shape_basis = U`` and ``shape_std = 1000 * S`` (mm). A FLAME
``beta`` corresponds to facelab's ``alpha = 1000 * S W^T beta``. FLAME has no albedo
model: ``mean_albedo`` is grey 0.5 and the albedo basis is empty.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import numpy as np

from facelab.io._build import assemble_model, check_faces, orthonormal_pca
from facelab.io._util import check_finite, existing_file
from facelab.morphable.model import MorphableModel

FLAME_METRES_TO_MM = 1000.0
FLAME_N_SHAPE = 300
FLAME_N_EXP = 100
FLAME_REQUIRED = ("v_template", "f", "shapedirs")

_NUMPY_NAMES = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer", "frombuffer", "matrix"}
_OTHER_SAFE = {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
               ("collections", "OrderedDict")}
_SAFE_BUILTINS = {
    "object", "set", "frozenset", "dict", "list", "tuple", "str", "bytes", "bytearray",
    "int", "float", "complex", "bool", "slice", "range",
}


class ChumpyStub:
    """Stand-in for a pickled chumpy object; holds its state without importing chumpy.

    ``np.asarray(stub)`` (and ``stub.r``) give the value of a leaf ``Ch`` object.

    >>> s = ChumpyStub(); s.__setstate__({"x": np.arange(3.0)})
    >>> s.r.tolist()
    [0.0, 1.0, 2.0]
    """

    _chumpy_class = "chumpy.Ch"

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    @property
    def r(self) -> np.ndarray:
        for key in ("x", "_x", "a"):
            value = self.__dict__.get(key)
            if value is not None:
                return np.asarray(value)
        if self._args and isinstance(self._args[0], np.ndarray):
            return self._args[0]
        raise ValueError(
            f"{self._chumpy_class} object holds no plain array value (keys {sorted(self.__dict__)}); "
            "it is a chumpy expression, re-save the model with numpy arrays"
        )

    def __array__(self, dtype=None, copy=None):
        a = self.r
        return a.astype(dtype) if dtype is not None else a


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (ChumpyStub,), {"_chumpy_class": f"{module}.{name}"})
        if module.startswith("scipy.sparse"):
            import scipy.sparse

            if hasattr(scipy.sparse, name):  # old pickles name private modules (scipy.sparse.csc)
                return getattr(scipy.sparse, name)
        numpy_ok = module.startswith("numpy") and (name in _NUMPY_NAMES or module == "numpy.dtypes")
        if numpy_ok or (module, name) in _OTHER_SAFE:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load class {module}.{name}")


def read_flame_pickle(path) -> dict:
    """Read a FLAME pickle into a dict of plain numpy arrays / scipy sparse matrices.

    Args:
        path: ``generic_model.pkl`` (or another FLAME/SMPL-style chumpy pickle).

    Returns:
        dict: every entry of the pickle, chumpy objects converted to ``np.ndarray``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a pickle, truncated, not a dict, or a disallowed class.

    >>> import tempfile, os, pickle
    >>> p = os.path.join(tempfile.mkdtemp(), "m.pkl")
    >>> pickle.dump({"f": np.zeros((1, 3), np.uint32)}, open(p, "wb"), protocol=2)
    >>> read_flame_pickle(p)["f"].shape
    (1, 3)
    """
    path = existing_file(path, "FLAME model file")
    data = path.read_bytes()
    try:
        obj = _FlameUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError, KeyError, MemoryError) as err:
        raise ValueError(f"{path}: not a readable FLAME pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        try:
            out[key] = np.asarray(value) if isinstance(value, ChumpyStub) else value
        except ValueError as err:
            raise ValueError(f"{path}: '{key}': {err}") from None
    return out


def load_flame(path, n_shape: int = FLAME_N_SHAPE, n_exp: int = FLAME_N_EXP, landmarks=None,
               face_mask=None) -> MorphableModel:
    """Load FLAME ``generic_model.pkl`` as a :class:`MorphableModel`.

    Args:
        path: the pickle.
        n_shape: identity components: the first ``n_shape`` columns of ``shapedirs``.
        n_exp: expression components: the ``n_exp`` columns after the identity block
            (FLAME 2017/2020: identity 0..299, expression 300..399).
        landmarks: optional ``(68,)`` int vertex indices; else empty ``(0,)``.
        face_mask: optional ``(V,)`` bool; else all True.

    Returns:
        MorphableModel: ``mean_shape (V, 3)`` mm, orthonormalised identity and expression
        bases with ``std`` in mm (see the module docstring), grey albedo.

    Raises:
        FileNotFoundError, ValueError (missing key, wrong shape, too few components).

    >>> import tempfile, os, pickle
    >>> p = os.path.join(tempfile.mkdtemp(), "generic_model.pkl")
    >>> v = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0]])
    >>> dirs = np.zeros((3, 3, 2)); dirs[1, 0, 0] = 0.002; dirs[2, 1, 1] = 0.001
    >>> pickle.dump({"v_template": v, "f": np.array([[0, 1, 2]]), "shapedirs": dirs}, open(p, "wb"), protocol=2)
    >>> m = load_flame(p, n_shape=1, n_exp=1)
    >>> m.mean_shape[1].tolist(), m.shape_std.tolist(), m.exp_std.tolist()
    ([10.0, 0.0, 0.0], [2.0], [1.0])
    """
    for value, name in ((n_shape, "n_shape"), (n_exp, "n_exp")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    raw = read_flame_pickle(path)
    path = Path(path)
    missing = [k for k in FLAME_REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing required key(s) {missing}")
    v = np.asarray(raw["v_template"], dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise ValueError(f"{path}: 'v_template' must be (V, 3), got shape {v.shape}")
    check_finite(v, path, "v_template")
    V = v.shape[0]
    dirs = np.asarray(raw["shapedirs"], dtype=np.float64)
    if dirs.ndim != 3 or dirs.shape[:2] != (V, 3):
        raise ValueError(f"{path}: 'shapedirs' must be ({V}, 3, K), got shape {dirs.shape}")
    if n_shape + n_exp > dirs.shape[2]:
        raise ValueError(f"{path}: 'shapedirs' has {dirs.shape[2]} components, fewer than n_shape + n_exp = {n_shape + n_exp}")
    flat = dirs.reshape(3 * V, -1)  # row 3*v + c, as facelab's bases
    shape = _orthonormalise(flat[:, :n_shape], path, "shapedirs[..., :n_shape]")
    exp = _orthonormalise(flat[:, n_shape:n_shape + n_exp], path, "shapedirs[..., n_shape:]")
    faces = check_faces(raw["f"], V, path, "f", one_based=False)
    return assemble_model(
        path=path, fmt="flame-pkl", name="flame", mean_shape=v * FLAME_METRES_TO_MM, faces=faces,
        shape=shape, exp=exp, landmarks=landmarks, face_mask=face_mask,
        meta={"flame_keys": sorted(str(k) for k in raw)},
    )


def _orthonormalise(block: np.ndarray, path: Path, key: str):
    U, s, how = orthonormal_pca(block, np.ones(block.shape[1]), path, key)
    return U, s * FLAME_METRES_TO_MM, how
