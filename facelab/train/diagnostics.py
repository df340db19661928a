"""Does each loss term pull on training? Gradient shares per term and module.

An ablation that removes a loss term only means something if the term pulled on the
weights while it was there. Every ``diagnose_every`` steps the :class:`~facelab.train.Trainer`
asks a loss for its weighted terms (the summands of the total loss) and measures, for each
term ``t`` and each watched module ``m`` (an encoder, a decoder), the norm of
``d t / d theta_m`` and its *share* of the sum over terms:

    share(t, m) = |grad_m t| / sum_u |grad_m u|   (in [0, 1]; the shares of a module add up to 1)

The shares are logged as ``share/<term>@<module>`` beside the loss's own metrics, and
:func:`summarize_shares` turns a run's log into the figures a reproduction reports: the mean
share and the fraction of logged steps in which it reached
:data:`facelab.metrics.stats.MIN_GRADIENT_SHARE` (:func:`facelab.metrics.stats.term_active`
makes the call). Measuring costs one extra backward pass per term on those steps and
changes nothing about training: ``torch.autograd.grad`` leaves the parameters' ``.grad``
and every random state alone.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from facelab.metrics.stats import MIN_ACCURACY_OVER_CHANCE, MIN_GRADIENT_SHARE, term_active

__all__ = ["term_gradient_shares", "summarize_shares", "SHARE_PREFIX"]

SHARE_PREFIX = "share/"


def _parameters(module) -> list[torch.Tensor]:
    if isinstance(module, nn.Module):
        params = module.parameters()
    else:  # a list of modules or of parameters
        params = (p for m in module for p in (m.parameters() if isinstance(m, nn.Module) else [m]))
    return [p for p in params if p.requires_grad]


def term_gradient_shares(terms: Mapping[str, torch.Tensor], modules: Mapping[str, nn.Module | Iterable]) -> dict[str, float]:
    """Each term's share of the gradient norm on each module.

    Args:
        terms: ``{name: 0-d tensor}``, the weighted summands of the loss, still in the graph.
        modules: ``{name: module, list of modules or list of parameters}`` to watch.

    Returns:
        ``{"share/<term>@<module>": share}``; a module no term reaches is left out.

    >>> enc, dec = nn.Linear(2, 2), nn.Linear(2, 1)
    >>> x = torch.ones(1, 2); h = enc(x)
    >>> out = term_gradient_shares({"a": dec(h).sum(), "b": 3 * h.sum()}, {"encoder": enc, "decoder": dec})
    >>> out["share/b@decoder"], round(out["share/a@decoder"], 3)
    (0.0, 1.0)
    """
    if not terms:
        raise ValueError("terms: nothing to measure")
    out: dict[str, float] = {}
    for mod_name, module in modules.items():
        params = _parameters(module)
        if not params:
            raise ValueError(f"modules: {mod_name!r} has no trainable parameters")
        norms = {}
        for term_name, term in terms.items():
            if term.dim() != 0:
                raise ValueError(f"terms: {term_name!r} must be a 0-d tensor, got shape {tuple(term.shape)}")
            if not term.requires_grad:
                norms[term_name] = 0.0
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            squares = [g.detach().pow(2).sum() for g in grads if g is not None]
            norms[term_name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
        total = sum(norms.values())
        if total > 0:
            out.update({f"{SHARE_PREFIX}{t}@{mod_name}": n / total for t, n in norms.items()})
    return out


def summarize_shares(rows: list[dict], chance: float | None = None, accuracy_key: str = "acc") -> dict:
    """Per term and module, the mean share and how often it reached :data:`MIN_GRADIENT_SHARE`.

    Args:
        rows: a run's logged rows (``metrics.jsonl``), with ``share/<term>@<module>`` keys.
        chance: the identity head's chance accuracy (1 / classes), if the run has one;
            ``rows[...][accuracy_key]`` is then compared with it.

    Returns:
        ``{"terms": {term: {module: {"mean_share", "active_fraction", "active"}}},
        "accuracy": {"final", "chance", "active_fraction"}}`` (the accuracy part only with
        ``chance``); ``active`` is :func:`facelab.metrics.stats.term_active` of the shares alone.

    >>> rows = [{"share/L_C@encoder": 0.3, "acc": 0.2}, {"share/L_C@encoder": 0.05, "acc": 0.4}]
    >>> s = summarize_shares(rows, chance=0.01)
    >>> s["terms"]["L_C"]["encoder"]["active_fraction"], s["accuracy"]["active_fraction"]
    (0.5, 1.0)
    """
    series: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(SHARE_PREFIX):
                term, _, module = key[len(SHARE_PREFIX):].partition("@")
                series.setdefault((term, module), []).append(float(value))
    terms: dict[str, dict] = {}
    for (term, module), values in sorted(series.items()):
        active = sum(v >= MIN_GRADIENT_SHARE for v in values) / len(values)
        terms.setdefault(term, {})[module] = {"mean_share": sum(values) / len(values), "active_fraction": active,
                                              "active": term_active(values)}
    out: dict = {"terms": terms}
    if chance is not None:
        acc = [float(r[accuracy_key]) for r in rows if accuracy_key in r]
        if acc:
            out["accuracy"] = {"final": acc[-1], "chance": chance,
                               "active_fraction": sum(a >= MIN_ACCURACY_OVER_CHANCE * chance for a in acc) / len(acc)}
    return out
