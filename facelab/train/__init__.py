"""facelab.train: the training loop, checkpoints and training recipes.

* :mod:`~facelab.train.trainer`: :class:`Trainer` / :class:`TrainConfig` (logging, atomic
  checkpoints, exact resumption, NaN guard) and deterministic step batching.
* :mod:`~facelab.train.checkpoint`: checkpoint files and the model registry.
* :mod:`~facelab.train.regressor`: the coefficient-regressor recipe (:func:`train_regressor`).
* :mod:`~facelab.train.liu2018`: Liu et al. 2018's three training phases (:func:`train_liu2018`).
"""

from facelab.train.checkpoint import (
    build_model, load_checkpoint, load_model, register_model, registered_models, save_checkpoint,
)
from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018
from facelab.train.regressor import RegressorLoss, RegressorTrainConfig, train_regressor
from facelab.train.trainer import (
    NonFiniteLossError, StepBatches, StepLoader, TrainConfig, Trainer, seed_everything, step_indices,
)

__all__ = [
    "save_checkpoint", "load_checkpoint", "register_model", "registered_models", "build_model", "load_model",
    "TrainConfig", "Trainer", "NonFiniteLossError", "StepBatches", "StepLoader", "seed_everything", "step_indices",
    "RegressorTrainConfig", "RegressorLoss", "train_regressor",
    "Liu2018TrainConfig", "train_liu2018",
]
