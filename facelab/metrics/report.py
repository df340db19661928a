"""Writing evaluation results: JSON (machine-readable) and Markdown tables (for people).

Book chapter: ``book/07_evaluation.ipynb``. :func:`to_jsonable` turns numpy/torch values,
tuples and dataclasses into plain JSON types (NaN and infinities become ``null``, as
strict JSON has no NaN); :func:`markdown_table` formats one table; :func:`baselines_markdown`
formats the result of :func:`facelab.metrics.baselines.run_baselines`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from facelab.viz.tables import row_columns

DEFAULT_FORMAT = "{:.3f}"
MISSING = "–"  # shown for a null cell (e.g. the mean face has no embedding)
LFW_FOLDS = 10  # the LFW protocol's folds: the title's count when a result carries no per-fold thresholds


def to_jsonable(obj):
    """A copy of ``obj`` made of dicts, lists, str, int, float, bool and None only.

    Tensors and arrays become (nested) lists, numpy scalars Python numbers, tuples lists,
    dataclasses dicts; non-finite floats become ``None``; dict keys become strings.

    >>> to_jsonable({"a": np.float64(1.5), "b": (np.int64(2), float("nan")), 3: torch.tensor([1.0])})
    {'a': 1.5, 'b': [2, None], '3': [1.0]}
    """
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"obj: cannot write a {type(obj).__name__} as JSON")


def write_json(obj, path=None, indent: int | None = 2) -> str:
    """Serialise ``obj`` (via :func:`to_jsonable`) and optionally write it to ``path``.

    Returns the JSON text.

    >>> write_json({"rmse": np.float32(0.5)}, indent=None)
    '{"rmse": 0.5}'
    """
    text = json.dumps(to_jsonable(obj), indent=indent)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return fmt.format(float(value))
    return str(value)


def markdown_table(rows: dict, columns=None, fmt: str = DEFAULT_FORMAT, row_header: str = "method") -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        rows: ``{row name: {column: value}}``; a row may be ``None`` (all cells ``–``).
            Values are floats (formatted with ``fmt``), strings or None.
        columns: column keys in order (default: the keys of the first non-null row).
        fmt: format of float cells. row_header: title of the first column.

    >>> print(markdown_table({"mean face": {"rmse": 4.0}, "oracle": {"rmse": 0.3456}}))
    | method | rmse |
    | --- | --- |
    | mean face | 4.000 |
    | oracle | 0.346 |
    """
    if not isinstance(rows, dict) or not rows:
        raise ValueError("rows: expected a non-empty dict of rows")
    columns = row_columns(rows, columns)
    lines = ["| " + " | ".join([row_header, *map(str, columns)]) + " |", "| " + " | ".join(["---"] * (len(columns) + 1)) + " |"]
    for name, row in rows.items():
        cells = [_cell(None if row is None else row.get(c), fmt) for c in columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def _pm(stats: dict, fmt: str) -> str:
    return f"{fmt.format(stats['mean'])} ± {fmt.format(stats['std'])}"


def baselines_markdown(result: dict, fmt: str = DEFAULT_FORMAT) -> str:
    """Markdown tables of a :func:`~facelab.metrics.baselines.run_baselines` result.

    One table per suite present (MICC point-to-plane mean ± std per condition, mm;
    BU-3DFE RMSE per |yaw|, mm; LFW verification, %) and the timings.

    >>> print(baselines_markdown({"timings_s": {"lfw": 1.5, "total": 1.5}}))
    **Time per protocol (s)**: lfw 1.5, total 1.5
    """
    parts = []
    if "micc" in result:
        rows = {name: {c: _pm(s, fmt) for c, s in conds.items()} for name, conds in result["micc"].items() if name != "details"}
        parts.append("**MICC-style point-to-plane error (mm), mean ± std over videos**\n\n" + markdown_table(rows))
    if "bu3dfe" in result:
        rows = {name: row for name, row in result["bu3dfe"]["rmse"].items()}
        columns = list(next(iter(rows.values())))
        parts.append("**BU-3DFE-style vertex RMSE (mm) per |yaw| (degrees)**\n\n"
                     + markdown_table(rows, [c for c in columns], fmt))
        nme = {name: {k: 100 * v for k, v in row.items()} for name, row in result["bu3dfe"]["landmark_nme"].items()}
        parts.append("**2D landmark NME (%) per yaw bucket**\n\n" + markdown_table(nme, fmt="{:.2f}", row_header="landmarks"))
    if "lfw" in result:
        rows = {}
        for name, r in result["lfw"].items():
            if name == "details":
                continue
            rows[name] = None if r is None else {
                "accuracy (%)": f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}",
                "AUC": f"{r['auc']:.4f}", "EER (%)": 100 * r["eer"], "VAL@FAR=1e-3 (%)": 100 * r["val"],
                **{f"TAR@FAR={k} (%)": 100 * v for k, v in r["tar_at_far"].items()},
            }
        columns = list(next(r for r in rows.values() if r is not None)) if any(r is not None for r in rows.values()) else []
        scored = [r for name, r in result["lfw"].items() if name != "details" and r is not None]
        n_folds = len(scored[0]["best_thresholds"]) if scored and "best_thresholds" in scored[0] else LFW_FOLDS
        parts.append(f"**LFW-protocol verification ({n_folds} folds)**\n\n" + markdown_table(rows, columns, "{:.2f}"))
    if "timings_s" in result:
        parts.append("**Time per protocol (s)**: " + ", ".join(f"{k} {v}" for k, v in result["timings_s"].items()))
    return "\n\n".join(parts)


def claims_markdown(claims: list[dict]) -> str:
    """The claims as a Markdown table: estimate (A - B), 95 % interval, sample sizes, verdict.

    >>> c = [{"id": "L2", "text": "t", "rows": ["a", "b"], "metric": "micc_mm", "estimate": -0.1,
    ...       "ci95": [-0.2, 0.0], "n_subjects": 30, "n_seeds": 3, "verdict": "within noise"}]
    >>> print(claims_markdown(c).splitlines()[-1])
    | L2 | t | a - b | micc_mm | -0.1000 | [-0.2000, 0.0000] | 30 subjects x 3 seeds | within noise |
    """
    from facelab.metrics.stats import unit_plural

    if not claims:
        return "**Claims**: none (their rows were not run)"
    rows = {c["id"]: {"claim": c["text"], "rows": f"{c['rows'][0]} - {c['rows'][1]}", "metric": c["metric"],
                      "estimate": f"{c['estimate']:.4f}", "95 % CI": f"[{c['ci95'][0]:.4f}, {c['ci95'][1]:.4f}]",
                      "n": f"{c['n_subjects']} {unit_plural(c.get('unit', 'subject'))} x {c['n_seeds']} seeds", "verdict": c["verdict"]}
            for c in claims}
    return "**Claims** (paired differences A - B, 95 % bootstrap intervals)\n\n" + markdown_table(rows, row_header="id")
