"""Configuration dataclasses: CLI overrides and JSON round trips.

Every config in facelab is a ``@dataclass``. ``apply_overrides`` takes
``key=value`` strings (as given to the CLI's ``--set``), parses each value with
the field's type, and rejects unknown keys by name. A config may nest another
(every recipe config holds its training-loop options as ``train``): its fields
are set as ``train.lr=0.1``, or as ``lr=0.1`` when the outer config has no ``lr``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _parse(value: str, typ: Any, key: str):
    origin = typing.get_origin(typ)
    if typ is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}: expected a boolean, got {value!r}")
    if typ in (int, float, str):
        try:
            return typ(value)
        except ValueError:
            raise ValueError(f"--set {key}: expected {typ.__name__}, got {value!r}") from None
    if origin in (tuple, list):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = [v for v in value.split(",") if v]
        if not isinstance(parsed, list):
            parsed = [parsed]
        args = typing.get_args(typ)
        inner = args[0] if args else str
        return origin(_parse(str(v), inner, key) for v in parsed)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        return _parse(value, args[0], key)
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _hints(cls) -> dict[str, Any]:
    """``{field name: type}`` of dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _nested(cls) -> dict[str, type]:
    """The fields of dataclass ``cls`` that hold a nested dataclass: ``{name: its class}``."""
    return {name: typ for name, typ in _hints(cls).items() if isinstance(typ, type) and dataclasses.is_dataclass(typ)}


def known_keys(cls) -> list[str]:
    """The keys :func:`apply_overrides` takes for dataclass ``cls``: its fields, a nested config's as ``name.field``."""
    nested = _nested(cls)
    return [key for name in _hints(cls)
            for key in ([f"{name}.{k}" for k in known_keys(nested[name])] if name in nested else [name])]


def _resolve_key(cls, key: str, label: str = "") -> str:
    """The full key of ``key`` in dataclass ``cls``: itself if known, else ``name.key`` when exactly one
    nested config has a field ``key`` that ``cls`` lacks (the short form); unknown keys raise."""
    keys = known_keys(cls)
    if key in keys:
        return key
    short = [k for k in keys if "." not in key and k.count(".") == 1 and k.endswith("." + key)]
    if len(short) == 1 and key not in _nested(cls):  # a group's name (``train``) is never short for a field
        return short[0]
    raise ValueError(f"{label}{key}: unknown config key; known keys: {', '.join(keys)}")


def _field_type(cls, key: str):
    """The type of the field that full key ``key`` (dotted into nested configs) names."""
    *parents, name = key.split(".")
    for parent in parents:
        cls = _nested(cls)[parent]
    return _hints(cls)[name]


def _replace(cfg: T, changes: dict[str, Any]) -> T:
    """``dataclasses.replace`` with full keys, dotted ones replacing fields of nested configs."""
    top = {k: v for k, v in changes.items() if "." not in k}
    inner: dict[str, dict] = {}
    for key, value in changes.items():
        if "." in key:
            head, rest = key.split(".", 1)
            inner.setdefault(head, {})[rest] = value
    for head, sub in inner.items():
        top[head] = _replace(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **top)


def replace_fields(cfg: T, changes: dict[str, Any]) -> T:
    """A copy of dataclass ``cfg`` with ``changes`` (``{key: value}``) applied.

    Keys are those of :func:`apply_overrides` (a field, ``name.field`` for a field of a nested
    config, or such a field named alone when ``cfg`` has no field of that name) and the name of
    a nested config, whose value replaces it whole.
    """
    names = _hints(type(cfg))
    return _replace(cfg, {key if key in names else _resolve_key(type(cfg), key): value
                          for key, value in changes.items()})


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of dataclass ``cfg`` with ``key=value`` overrides applied.

    A key is a field of ``cfg`` or, dotted, of a nested config (``train.lr=0.1``); a field of a
    nested config that ``cfg`` itself lacks may also be named alone (``lr=0.1``).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     lr: float = 1e-3
    ...     steps: int = 10
    ...     size: tuple[int, ...] | None = None
    >>> apply_overrides(C(), ["lr=0.5", "steps=3"])
    C(lr=0.5, steps=3, size=None)
    >>> apply_overrides(C(), ["size=32,32"]).size
    (32, 32)
    >>> apply_overrides(C(), ["lrr=0.5"])
    Traceback (most recent call last):
    ...
    ValueError: --set lrr: unknown config key; known keys: lr, steps, size
    """
    if not overrides:
        return cfg
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        full = _resolve_key(type(cfg), key, "--set ")
        changes[full] = _parse(value.strip(), _field_type(type(cfg), full), key)
    return _replace(cfg, changes)


def with_options(config, config_class: type[T], options: dict, caller: str) -> T:
    """``config`` (or ``config_class()``) with keyword ``options`` replacing its fields.

    Unknown options raise ``TypeError`` naming ``caller``, like an unexpected keyword.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     n: int = 1
    >>> with_options(None, C, {"n": 3}, "fit")
    C(n=3)
    >>> with_options(None, C, {"m": 3}, "fit")
    Traceback (most recent call last):
    ...
    TypeError: fit: unknown option(s) ['m']; known: ['n']
    """
    cfg = config if config is not None else config_class()
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"{caller}: unknown option(s) {unknown}; known: {sorted(names)}")
    return dataclasses.replace(cfg, **options)


def resolve_profile(cfg, defaults: dict) -> None:
    """Fill each field of dataclass ``cfg`` that is None with ``defaults[name]``, in place.

    None means "the profile's value" in every recipe config; ``defaults`` is the profile's
    table. A nested config takes a dict of its own defaults (``{"train": {"lr": 0.1}}``): it is
    replaced by a copy whose None fields are filled the same way. A key of ``defaults`` that is
    not a field of ``cfg`` raises (a typo in a table).

    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Loop:
    ...     lr: float | None = None
    ...     seed: int = 0
    >>> @dataclass
    ... class C:
    ...     steps: int | None = None
    ...     lr: float = 0.1
    ...     train: Loop = field(default_factory=Loop)
    >>> c = C(); resolve_profile(c, {"steps": 300, "train": {"lr": 1e-3}}); c
    C(steps=300, lr=0.1, train=Loop(lr=0.001, seed=0))
    """
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise ValueError(f"defaults: {unknown} are not fields of {type(cfg).__name__}")
    for name, value in defaults.items():
        current = getattr(cfg, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            current = copy.copy(current)  # the caller's nested config stays as it was
            resolve_profile(current, value)
            setattr(cfg, name, current)
        elif current is None:
            setattr(cfg, name, value)


def split_overrides(overrides, groups: tuple[str, ...]) -> dict[str, list[str]]:
    """Sort ``group.key=value`` overrides by group, stripping the group prefix.

    ``overrides`` is a list of strings or a dict (tuple / list values are joined with commas);
    None gives empty lists.

    >>> split_overrides(["train.lr=0.1", "eval.icp_iters=3"], ("train", "eval"))
    {'train': ['lr=0.1'], 'eval': ['icp_iters=3']}
    >>> split_overrides({"train.steps": (2, 1)}, ("train",))
    {'train': ['steps=2,1']}
    >>> split_overrides(["lr=0.1"], ("train",))
    Traceback (most recent call last):
    ...
    ValueError: overrides: 'lr=0.1' must start with one of train.
    """
    split = {g: [] for g in groups}
    if overrides is None:
        return split
    if isinstance(overrides, dict):
        overrides = [f"{k}={v}" if not isinstance(v, (tuple, list)) else f"{k}={','.join(map(str, v))}"
                     for k, v in overrides.items()]
    for item in overrides:
        group, _, field = item.split("=", 1)[0].partition(".")
        if group not in split or not field:
            raise ValueError(f"overrides: {item!r} must start with one of {', '.join(g + '.' for g in groups)}")
        split[group].append(item[len(group) + 1:])
    return split


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a dataclass, with its class name under ``"_type"``."""
    d = dataclasses.asdict(cfg)
    d["_type"] = type(cfg).__name__
    return d


def from_dict(cls: type[T], d: dict) -> T:
    """Rebuild a dataclass from ``to_dict`` output; unknown keys raise.

    Nested configs are rebuilt from their dicts. A key that is not a field of ``cls`` but of
    exactly one nested config moves into it, so a dict saved before that config was nested
    (flat ``lr``, ``seed``, ...) still loads.
    """
    d = {k: v for k, v in d.items() if k != "_type"}
    hints, nested = _hints(cls), _nested(cls)
    for key in [k for k in d if k not in hints]:
        full = _resolve_key(cls, key, f"{cls.__name__}: ")  # unknown keys raise here
        head, rest = full.split(".", 1)
        sub = d[head] = dict(d.get(head) or {})
        if rest in sub:
            raise ValueError(f"{cls.__name__}: {key!r} is given both flat and in {head!r}")
        sub[rest] = d.pop(key)
    for k, v in d.items():
        if k in nested and isinstance(v, dict):
            d[k] = from_dict(nested[k], v)
        elif typing.get_origin(hints[k]) is tuple and isinstance(v, list):
            d[k] = tuple(v)
    return cls(**d)


def save_json(cfg, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2))


def cache_dir() -> Path:
    """Where built models and cached data live: ``$FACELAB_CACHE`` or ``~/.cache/facelab``."""
    import os

    root = Path(os.environ.get("FACELAB_CACHE", Path.home() / ".cache" / "facelab"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch CPU threads (``n <= 0``: leave as is), then restore.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    try:
        if n > 0:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)


AUTO_DEVICE = "auto"


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when a CUDA device is available, else ``"cpu"``; any other name as given.

    Every recipe and evaluation config defaults to ``device="auto"`` and stores what it
    resolved to, so a saved config says where it ran.

    >>> resolve_device("cpu"), resolve_device("auto") in ("cpu", "cuda")
    ('cpu', True)
    >>> resolve_device("")
    Traceback (most recent call last):
    ...
    ValueError: device: expected 'auto' or a torch device name such as 'cpu' or 'cuda:0', got ''
    """
    import torch

    if device == AUTO_DEVICE:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto' or a torch device name such as 'cpu' or 'cuda:0', got {device!r}") from err
    return device
