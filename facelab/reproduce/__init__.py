"""Reproductions of the papers' result tables on SynthFaces (``facelab reproduce ...``).

:data:`REPRODUCTIONS` is the table ``facelab reproduce NAME`` reads: per paper, the
training recipe it trains (a key of :data:`facelab.train.recipes.RECIPES`), the function
that trains and scores it, and the one that prints its result. Adding a paper means
adding its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from facelab.reproduce import gao2020, liu2018, sir
from facelab.reproduce.liu2018 import liu_reference, reproduce_liu2018, results_markdown


@dataclass(frozen=True)
class Reproduction:
    """One paper's table: ``run(profile, out_dir, overrides, liu=..., with_baselines=...) -> result``."""

    recipe: str
    run: Callable[..., dict]
    markdown: Callable[[dict], str]
    uses_liu: bool  # its table has a Liu et al. row (``--liu``)
    terminal_drop: tuple[str, ...] = ()  # result keys too long for the terminal (kept in results.json)

    takes_seeds: bool = False  # trains several seeds (``seeds=``)

    def __call__(self, profile: str, out_dir, overrides=None, liu=None, with_baselines: bool = True,
                 seeds: tuple[int, ...] | None = None) -> dict:
        options: dict[str, Any] = {"liu": liu} if self.uses_liu else {}
        if seeds is not None:
            if not self.takes_seeds:
                raise ValueError(f"seeds: the {self.recipe} reproduction trains one seed (set train.seed instead)")
            options["seeds"] = tuple(seeds)
        return self.run(profile, out_dir, overrides, with_baselines=with_baselines, **options)


def _sir(profile, out_dir, overrides=None, liu=None, with_baselines: bool = True, seeds=None):
    return sir.reproduce_sir(profile, out_dir, overrides, liu=liu, seeds=seeds)  # its baselines are rows of its own table


def _gao(profile, out_dir, overrides=None, liu=None, with_baselines: bool = True, seeds=None):
    return gao2020.reproduce_gao2020(profile, out_dir, overrides, liu=liu, with_baseline=with_baselines, seeds=seeds)


REPRODUCTIONS: dict[str, Reproduction] = {
    "liu2018": Reproduction("liu2018", liu2018.reproduce_liu2018, liu2018.results_markdown, uses_liu=False,
                            takes_seeds=True),
    "gao2020": Reproduction("gao2020", _gao, gao2020.results_markdown, uses_liu=True, terminal_drop=("heat_maps",),
                            takes_seeds=True),
    "sir": Reproduction("sir", _sir, sir.results_markdown, uses_liu=True, takes_seeds=True),
}

__all__ = ["REPRODUCTIONS", "Reproduction", "liu_reference", "reproduce_liu2018", "results_markdown"]
