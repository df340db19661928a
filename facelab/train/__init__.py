"""facelab.train: the training loop and the training recipes.

Checkpoint files are :mod:`facelab.io.checkpoint`; rebuilding a trained model from one is
:func:`facelab.models.load_model` (the model registry).

* :mod:`~facelab.train.trainer`: :class:`Trainer` / :class:`TrainConfig` (logging, atomic
  checkpoints, exact resumption, NaN guard), :class:`LoopConfig` (the loop options every recipe
  config nests as ``train``) and deterministic step batching.
* :mod:`~facelab.train.stages`: :func:`run_stages`, the stage runner of the multi-stage recipes.
* :mod:`~facelab.train.regressor`: the coefficient-regressor recipe (:func:`train_regressor`).
* :mod:`~facelab.train.liu2018`: Liu et al. 2018's three training phases (:func:`train_liu2018`).
"""

from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018
from facelab.train.regressor import RegressorLoss, RegressorTrainConfig, train_regressor
from facelab.train.stages import Stage, run_stages
from facelab.train.trainer import (
    LoopConfig, NonFiniteLossError, StepBatches, StepLoader, TrainConfig, Trainer, read_metrics, seed_everything,
    step_indices,
)

__all__ = [
    "TrainConfig", "LoopConfig", "Trainer", "NonFiniteLossError", "StepBatches", "StepLoader", "seed_everything",
    "step_indices", "read_metrics", "Stage", "run_stages",
    "RegressorTrainConfig", "RegressorLoss", "train_regressor",
    "Liu2018TrainConfig", "train_liu2018",
]
