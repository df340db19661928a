"""The training recipes by name: the table ``facelab train NAME`` reads.

A recipe is a config dataclass, a ``train(config) -> run folder`` function and the name of
the checkpoint its run ends with. Adding a recipe means adding its row to :data:`RECIPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from facelab.train.gao2020 import Gao2020TrainConfig, train_gao2020
from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018
from facelab.train.regressor import RegressorTrainConfig, train_regressor
from facelab.train.sir import SIRTrainConfig, train_sir


@dataclass(frozen=True)
class Recipe:
    """One training recipe: ``train(config_class(profile=...))`` writes ``<run>/<final_checkpoint>``."""

    config_class: type
    train: Callable[[Any], Path]
    final_checkpoint: str
    summary: str

    def final_path(self, run_dir: str | Path) -> Path:
        """The checkpoint a finished run in ``run_dir`` ends with.

        >>> RECIPES["liu2018"].final_path("runs/x").as_posix()
        'runs/x/phase3.pt'
        """
        return Path(run_dir) / self.final_checkpoint


RECIPES: dict[str, Recipe] = {
    "regressor": Recipe(RegressorTrainConfig, train_regressor, "last.pt",
                        "image -> 3DMM coefficients (the baseline encoder)"),
    "liu2018": Recipe(Liu2018TrainConfig, train_liu2018, "phase3.pt", "Liu et al. 2018 in three phases"),
    "gao2020": Recipe(Gao2020TrainConfig, train_gao2020, "step2.pt",
                      "Gao et al. 2020 in two steps (GCN, then CNN albedo)"),
    "sir": Recipe(SIRTrainConfig, train_sir, "sfm_sir.pt",
                  "mixed-label shape regressor with recognition / SIR losses and the Sphere Face Model"),
}
