"""Configuration dataclasses: CLI overrides and JSON round trips.

Every config in facelab is a ``@dataclass``. ``apply_overrides`` takes
``key=value`` strings (as given to the CLI's ``--set``), parses each value with
the field's type, and rejects unknown keys by name.
"""

from __future__ import annotations

import contextlib
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


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of dataclass ``cfg`` with ``key=value`` overrides applied.

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
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in names:
            raise ValueError(f"--set {key}: unknown config key; known keys: {', '.join(names)}")
        changes[key] = _parse(value.strip(), hints[key], key)
    return dataclasses.replace(cfg, **changes)


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
    table. A key of ``defaults`` that is not a field of ``cfg`` raises (a typo in a table).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     steps: int | None = None
    ...     lr: float = 0.1
    >>> c = C(); resolve_profile(c, {"steps": 300}); c
    C(steps=300, lr=0.1)
    """
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise ValueError(f"defaults: {unknown} are not fields of {type(cfg).__name__}")
    for name, value in defaults.items():
        if getattr(cfg, name) is None:
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
    """Rebuild a dataclass from ``to_dict`` output; unknown keys raise."""
    d = {k: v for k, v in d.items() if k != "_type"}
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(d) - names
    if extra:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(extra)}")
    hints = typing.get_type_hints(cls)
    for k, v in d.items():
        if typing.get_origin(hints[k]) is tuple and isinstance(v, list):
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
