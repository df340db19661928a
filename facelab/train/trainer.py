"""A minimal, reusable training loop with logging, atomic checkpoints and exact resumption.

:class:`Trainer` runs ``config.steps`` optimisation steps of ``loss_fn(model, batch)``.
It writes into ``config.out_dir``:

* ``config.json``: the training config, the model's name and config, and any ``extra_config``;
* ``metrics.csv`` and ``metrics.jsonl``: one row every ``log_every`` steps (the mean of each
  metric over the steps since the previous row, plus ``step``, ``lr``, ``time_s``);
* ``last.pt``: a checkpoint (:mod:`facelab.io.checkpoint`) every ``ckpt_every`` steps
  and at the end.

If ``out_dir/last.pt`` exists, training resumes from it: model, optimizer, scheduler,
step and RNG states are restored and the logs are cut back to that step. When batches
come from a callable ``step -> batch`` (see :func:`step_indices`), a resumed run ends with
bitwise the same weights as an uninterrupted one on CPU. A NaN or Inf loss stops training
with :class:`NonFiniteLossError` before the bad step touches the weights; ``last.pt`` keeps
the last good state. A ``last.pt`` written for another model (name or config) is refused
with a ``ValueError`` naming the file instead of being half-loaded.

Adversarial training: an optional ``critic`` (a :class:`CriticStep` or any object with
``step(model, batch, step) -> metrics``, ``state_dict()`` and ``load_state_dict()``) is
called once per training step, *after* the model's optimiser step, with the same batch; it
runs its own updates (``n_critic`` discriminator steps with its own optimiser, WGAN style).
Its state (weights and optimiser) is stored in the checkpoint (``extra["critic"]``) and
restored on resume, so a resumed adversarial run is still bitwise identical; its metrics are
logged in the same rows. Under torchrun a :class:`CriticStep` averages its gradients over
ranks (:func:`facelab.train.distributed.all_reduce_grads`) and starts from rank 0's weights.

Multi-process (``torchrun --nproc_per_node N``, see :mod:`facelab.train.distributed`): the
trainer starts the process group (gloo on CPU, nccl on CUDA), every rank builds the same
global batch for a step and trains on its contiguous share through
``DistributedDataParallel``; the loss callable still receives the plain model. Metrics are
averaged over ranks before logging, only rank 0 writes ``config.json``, logs and
checkpoints (the others wait on a barrier), each rank's RNG state is stored in the
checkpoint (``rng_per_rank``) and restored on resume, and rank ``r`` of a fresh run seeds
with ``seed + RANK_SEED_STRIDE * r``. The same config on 1 and 2 processes at the same
global batch agrees to float32 rounding (``tests/test_distributed.py`` measures it).
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from facelab.checks import check_choice, check_positive
from facelab.config import resolve_device, to_dict
from facelab.train import distributed as D
from facelab.train.diagnostics import SHARE_PREFIX, summarize_shares, term_gradient_shares
from facelab.io.checkpoint import TMP_SUFFIX, config_dict, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state

PROFILES = ("quick", "standard", "full")
CHECKPOINT_NAME = "last.pt"
HELDOUT_PREFIX = "heldout/"  # metrics.csv columns of the held-out figures
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
CONFIG_JSON = "config.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainConfig:
    """Options of :class:`Trainer`.

    Attributes:
        steps: optimisation steps in total (a resumed run continues up to it).
        batch_size: images per step (used by the recipes that build the batches).
        lr, weight_decay: optimiser settings (used by the recipes that build the optimiser).
        log_every: steps per row of ``metrics.csv`` / ``metrics.jsonl``.
        ckpt_every: steps between checkpoints (one is always written at the end).
        seed: seeds torch, numpy and Python at the start of a fresh run.
        out_dir: the run folder.
        device: where the model and batches live.
        profile: ``"quick"`` (CPU) or ``"full"`` (GPU); recorded for the record.
        grad_clip: max global gradient norm (0: no clipping).
        progress: show a tqdm progress bar.
        diagnose_every: every this many steps, log each loss term's share of the gradient on
            each watched module (:mod:`facelab.train.diagnostics`; 0: never). Needs a loss
            that returns its terms and ``diagnostic_modules``; one process only.
        heldout_every: every this many steps (and at the last), log the ``heldout`` callable's
            figures on data the run never trains on, as ``heldout/<name>`` columns (0: never).
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    log_every: int = 10
    ckpt_every: int = 100
    seed: int = 0
    out_dir: str = "runs/default"
    device: str = "auto"
    profile: str = "quick"
    grad_clip: float = 0.0
    progress: bool = True
    diagnose_every: int = 0
    heldout_every: int = 0

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            check_positive(getattr(self, name), name, integer=True)
        check_positive(self.lr, "lr")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip: must be finite and >= 0 (0 = off), got {self.grad_clip}")
        for name in ("diagnose_every", "heldout_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"{name}: must be an int >= 0 (0 = off), got {value!r}")
        check_choice(self.profile, "profile", PROFILES)


#: the loop options every recipe uses with these values unless its profile table says otherwise
LOOP_DEFAULTS = dict(weight_decay=1e-4, grad_clip=10.0, log_every=10, ckpt_every=100, seed=0, device="auto",
                     progress=True)


@dataclass
class LoopConfig:
    """The training-loop options of a recipe, shared by all its stages: every recipe config's ``train``.

    Every :class:`TrainConfig` field but ``steps``, ``out_dir`` and ``profile``, which a recipe
    sets per stage (see :class:`TrainConfig` for their meaning; ``seed`` also seeds the recipe's
    suites and batch order). None takes the recipe profile's value: its ``PROFILE_DEFAULTS[profile]["train"]``,
    filled in by :func:`facelab.config.resolve_profile`. Set them as ``--set train.lr=0.1`` (or
    ``--set lr=0.1``) or ``Recipe(train=LoopConfig(lr=0.1))``. A field a recipe takes from
    elsewhere (Liu et al.'s ``lr``: each phase has its own, ``phase_lr``) stays None, and setting it raises.

    >>> loop = LoopConfig(batch_size=8, lr=0.1, **LOOP_DEFAULTS); loop.check()
    >>> cfg = loop.stage(steps=5, out_dir="runs/x/phase1", profile="quick", lr=0.01)
    >>> cfg.steps, cfg.batch_size, cfg.lr, cfg.grad_clip
    (5, 8, 0.01, 10.0)
    >>> LoopConfig(lr=0.1).check(unused={"lr": "each phase's rate is phase_lr"})
    Traceback (most recent call last):
    ...
    ValueError: train.lr: not used by this recipe (each phase's rate is phase_lr); leave it unset
    """

    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    log_every: int | None = None
    ckpt_every: int | None = None
    seed: int | None = None
    device: str | None = None
    grad_clip: float | None = None
    progress: bool | None = None
    diagnose_every: int | None = None
    heldout_every: int | None = None

    def _given(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def check(self, unused: dict[str, str] | None = None) -> None:
        """Check the options as :class:`TrainConfig` does and resolve ``device="auto"``, in place.

        ``unused``: ``{field: what the recipe uses instead}``, fields that must stay None. Errors
        name the field as a recipe config's key (``train.lr: ...``).

        >>> LoopConfig(batch_size=0).check()
        Traceback (most recent call last):
        ...
        ValueError: train.batch_size: must be positive, got 0
        """
        for name, instead in (unused or {}).items():
            if getattr(self, name) is not None:
                raise ValueError(f"train.{name}: not used by this recipe ({instead}); leave it unset")
        try:
            checked = TrainConfig(**self._given())  # its errors start with the field's name
        except (TypeError, ValueError) as err:
            raise type(err)(f"train.{err}") from None
        if self.device is not None:
            self.device = checked.device

    def stage(self, steps: int, out_dir, profile: str, **changes) -> TrainConfig:
        """The :class:`TrainConfig` of one stage: these options (None: TrainConfig's default) with ``changes``."""
        return TrainConfig(steps=steps, out_dir=str(out_dir), profile=profile, **{**self._given(), **changes})


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``.

    >>> seed_everything(3); a = torch.rand(1); seed_everything(3); bool(torch.rand(1) == a)
    True
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def cosine_lr_factor(steps: int, final_fraction: float):
    """``step -> lr factor``: half a cosine from 1 at step 0 to ``final_fraction`` at ``steps`` (for ``LambdaLR``).

    >>> f = cosine_lr_factor(10, 0.05)
    >>> f(0), f(10), round(f(5), 3)
    (1.0, 0.05, 0.525)
    """
    def factor(step: int) -> float:
        t = min(step, steps) / steps
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def step_indices(n: int, batch_size: int, step: int, seed: int = 0) -> torch.Tensor:
    """The sample indices of one training step: a pure function of ``(seed, step)``.

    Steps walk through seeded random permutations of ``range(n)`` epoch by epoch, so every
    sample is seen once per epoch and any step can be regenerated (exact resumption,
    DataLoader workers).

    Returns:
        ``(batch_size,)`` long indices in ``[0, n)`` (``batch_size <= n``).

    >>> step_indices(10, 4, 0).tolist() == step_indices(10, 4, 0).tolist()
    True
    >>> sorted(torch.cat([step_indices(8, 4, s) for s in (0, 1)]).tolist())
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    check_positive(n, "n", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    if batch_size > n:
        raise ValueError(f"batch_size: {batch_size} exceeds the {n} samples")
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size]


class StepBatches(torch.utils.data.IterableDataset):
    """Batches ``collection.batch(step_indices(len(collection), batch_size, step, seed))`` for ``steps``.

    For a ``DataLoader(..., batch_size=None)``: worker ``w`` of ``n`` generates every n-th
    step and the loader interleaves them back in step order, so any worker count gives the
    same stream.

    >>> class Toy:
    ...     def __len__(self): return 6
    ...     def batch(self, idx): return {"idx": idx}
    >>> [b["idx"].shape[0] for b in StepBatches(Toy(), 3, range(2))]
    [3, 3]
    """

    def __init__(self, collection, batch_size: int, steps: range, seed: int = 0) -> None:
        self.collection, self.batch_size, self.steps, self.seed = collection, batch_size, steps, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, step in enumerate(self.steps):
            if k % nw == wid:
                with torch.no_grad():
                    batch = self.collection.batch(step_indices(len(self.collection), self.batch_size, step, self.seed))
                # yielded outside no_grad: a generator suspended inside it would leave gradients
                # off in the caller (the training loop itself when num_workers=0)
                yield batch


class StepLoader:
    """A callable ``step -> batch`` over a collection, prefetched by ``DataLoader`` workers.

    Calls must come in consecutive steps to use the prefetched stream; any other step
    (e.g. after resuming) restarts the stream there. Batches are those of
    :class:`StepBatches`, so they depend on ``(seed, step)`` only.

    >>> class Toy:
    ...     def __len__(self): return 6
    ...     def batch(self, idx): return {"idx": idx}
    >>> load = StepLoader(Toy(), 3, total_steps=4)
    >>> bool((load(2)["idx"] == step_indices(6, 3, 2)).all())
    True
    """

    def __init__(self, collection, batch_size: int, total_steps: int, seed: int = 0, num_workers: int = 0) -> None:
        self.collection, self.batch_size, self.total_steps = collection, batch_size, total_steps
        self.seed, self.num_workers = seed, num_workers
        self._iterator = None
        self._next_step = -1

    def __call__(self, step: int) -> dict:
        if self._iterator is None or step != self._next_step:
            stream = StepBatches(self.collection, self.batch_size, range(step, max(step + 1, self.total_steps)), self.seed)
            loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                                 persistent_workers=False)
            self._iterator = iter(loader)
        self._next_step = step + 1
        return next(self._iterator)


CRITIC_STATE_KEY = "critic"  # where the critic's state lives in a checkpoint's ``extra``


class CriticStep:
    """``n_critic`` updates of a critic (discriminator) per training step, with its own optimiser.

    Subclass and override :meth:`loss` (or pass ``loss_fn``): it returns the critic's loss
    (minimised) and metrics for one update. :meth:`step` runs the updates: zero the critic's
    gradients, backward, average them over ranks under torchrun, optimiser step. The
    :class:`Trainer` calls :meth:`step` after every model update and stores
    :meth:`state_dict` (critic weights, optimiser, update count) in its checkpoints.

    Metrics are averaged over the ``n_critic`` updates; ``critic_loss`` is always among them.
    A NaN or Inf critic loss raises :class:`NonFiniteLossError` before the critic is touched.

    Args:
        critic: the critic network (moved to the trainer's device with the model).
        optimizer: its optimiser (e.g. RMSprop for WGAN).
        n_critic: critic updates per training step (>= 1).
        loss_fn: ``loss_fn(critic, model, batch, step, k) -> (loss, {name: value})`` for update
            ``k`` of training step ``step`` (0-based), used by the default :meth:`loss`.

    >>> critic = nn.Linear(1, 1)
    >>> step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1), n_critic=2,
    ...                   loss_fn=lambda c, m, b, s, k: (c(b["x"]).mean(), {}))
    >>> metrics = step.step(None, {"x": torch.ones(3, 1)}, 0)
    >>> step.updates, sorted(metrics)
    (2, ['critic_loss'])
    """

    def __init__(self, critic: nn.Module, optimizer: torch.optim.Optimizer, n_critic: int = 1, loss_fn=None) -> None:
        if not isinstance(critic, nn.Module):
            raise TypeError(f"critic: expected an nn.Module, got {type(critic).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        check_positive(n_critic, "n_critic", integer=True)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError("loss_fn: expected a callable (critic, model, batch, step, k) -> (loss, metrics)")
        self.critic, self.optimizer, self.n_critic, self.loss_fn = critic, optimizer, n_critic, loss_fn
        self.updates = 0  # critic updates done so far (checkpointed)

    def loss(self, model: nn.Module, batch: dict, step: int, k: int) -> tuple[torch.Tensor, dict]:
        """The critic's loss and metrics for its update ``k`` of training step ``step``."""
        if self.loss_fn is None:
            raise NotImplementedError("CriticStep: override loss() or pass loss_fn")
        return self.loss_fn(self.critic, model, batch, step, k)

    def step(self, model: nn.Module, batch: dict, step: int) -> dict[str, float]:
        """Run ``n_critic`` critic updates; returns their mean metrics (floats, averaged over ranks)."""
        sums: dict[str, float] = {}
        self.critic.train()
        for k in range(self.n_critic):
            loss, metrics = self.loss(model, batch, step, k)
            values = D.all_reduce_mean({"critic_loss": loss.detach(), **metrics})
            if not (torch.isfinite(loss.detach()).all() and math.isfinite(values["critic_loss"])):
                raise NonFiniteLossError(f"step {step + 1}, critic update {k + 1}: the critic loss is "
                                         f"{values['critic_loss']}; training stopped before updating the critic. "
                                         f"Lower the critic's learning rate or check the batch for bad values.")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            D.all_reduce_grads(self.critic.parameters())
            self.optimizer.step()
            self.updates += 1
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v
        return {name: v / self.n_critic for name, v in sums.items()}

    def to(self, device) -> "CriticStep":
        """Move the critic to ``device`` (its parameters stay the optimiser's)."""
        self.critic.to(device)
        return self

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("critic", "optimizer", "updates") if k not in state]
        if missing:
            raise ValueError(f"state: critic state lacks {missing}")
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    """Runs a training loop; see the module docstring for what it writes.

    Args:
        model: the ``nn.Module`` to train (moved to ``config.device``).
        optimizer: its optimiser.
        batches: a callable ``step -> batch`` (exact resumption) or an iterable of batches
            (consumed from its current position; a resumed run then sees other batches).
        loss_fn: ``loss_fn(model, batch) -> (loss scalar tensor, {name: float or 0-d tensor})``, or
            ``-> (loss, metrics, {term: 0-d tensor})`` with the weighted terms that add up to the
            loss, which ``config.diagnose_every`` measures.
        config: a :class:`TrainConfig`.
        scheduler: optional LR scheduler, stepped after every optimiser step.
        model_name, model_config: stored in checkpoints so :func:`~facelab.io.checkpoint.load_model`
            can rebuild the model (``model_config`` defaults to ``model.config`` if present).
        extra_config: more config (e.g. the recipe's dataclass) for ``config.json`` and checkpoints.
        critic: optional adversarial critic (a :class:`CriticStep` or an object with ``step(model,
            batch, step) -> metrics``, ``state_dict()``, ``load_state_dict()``), called after every
            model update with the same batch; checkpointed and restored with the model.
        diagnostic_modules: ``{name: module or list of modules}`` whose gradient each loss term's
            share is measured on (see ``TrainConfig.diagnose_every``).
        chance: the chance level of the loss's ``acc`` metric (1 / classes), if it has one; the
            diagnostics summary compares the accuracy with it.
        heldout: ``heldout(model) -> {name: float}``, figures on held-out data (lower or higher is
            better, as the recipe says), run every ``config.heldout_every`` steps on the main
            process with the model in eval mode and gradients off; logged as ``heldout/<name>``.
            It must not draw random numbers (the run stays the same with or without it).

    >>> import tempfile
    >>> net = nn.Linear(1, 1)
    >>> cfg = TrainConfig(steps=5, ckpt_every=5, log_every=1, out_dir=tempfile.mkdtemp(), progress=False)
    >>> batch = {"x": torch.ones(4, 1), "y": 2 * torch.ones(4, 1)}
    >>> def loss_fn(m, b):
    ...     loss = ((m(b["x"]) - b["y"]) ** 2).mean()
    ...     return loss, {"mse": loss.detach()}
    >>> out = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), lambda s: batch, loss_fn, cfg,
    ...               model_name="linear", model_config={}).fit()
    >>> out["step"], out["metrics"]["mse"] < 1.0
    (5, True)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Callable[[int], dict] | Iterable[dict],
        loss_fn: Callable[[nn.Module, dict], tuple[torch.Tensor, dict]],
        config: TrainConfig,
        scheduler=None,
        model_name: str = "model",
        model_config=None,
        extra_config=None,
        critic=None,
        diagnostic_modules: dict | None = None,
        chance: float | None = None,
        heldout: Callable[[nn.Module], dict] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn: expected a callable (model, batch) -> (loss, metrics)")
        if not (callable(batches) or hasattr(batches, "__iter__")):
            raise TypeError("batches: expected a callable step -> batch or an iterable of batches")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        if critic is not None and not all(callable(getattr(critic, name, None))
                                          for name in ("step", "state_dict", "load_state_dict")):
            raise TypeError(f"critic: expected an object with step(model, batch, step), state_dict() and "
                            f"load_state_dict() (e.g. a CriticStep), got {type(critic).__name__}")
        self.config = config
        self.device = D.rank_device(config.device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.batches = batches
        self.loss_fn = loss_fn
        self.model_name = model_name
        self.model_config = model_config if model_config is not None else getattr(model, "config", {})
        self.extra_config = extra_config
        self.critic = critic
        self.diagnostic_modules = diagnostic_modules
        self.chance = chance
        self.heldout = heldout
        if critic is not None and callable(getattr(critic, "to", None)):
            critic.to(self.device)
        self.out_dir = Path(config.out_dir)
        self.step = 0
        self.resumed_from: int | None = None
        self.dist = D.dist_env()

    # ----------------------------------------------------------- bookkeeping
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def _config_record(self) -> dict:
        record = {"train": to_dict(self.config), "model_name": self.model_name,
                  "model": self.model_config if isinstance(self.model_config, dict) else to_dict(self.model_config)}
        if self.extra_config is not None:
            record["recipe"] = self.extra_config if isinstance(self.extra_config, dict) else to_dict(self.extra_config)
        return record

    def save(self) -> Path:
        """Write ``last.pt`` atomically at the current step (collective under torchrun: every rank
        calls it, rank 0 writes, the others wait)."""
        rng_states = D.all_gather_objects(get_rng_state())
        if self.dist.is_main:
            extra = {"recipe": self._config_record().get("recipe", {}),
                     "data_position": {"step": self.step, "stateless": callable(self.batches)},
                     "world_size": self.dist.world_size}
            if self.critic is not None:
                extra[CRITIC_STATE_KEY] = self.critic.state_dict()
            save_checkpoint(
                self.checkpoint_path, model_name=self.model_name, model_config=self.model_config,
                state_dict=self.model.state_dict(), optimizer=self.optimizer, scheduler=self.scheduler,
                step=self.step, epoch=0, train_config=self.config, rng_per_rank=rng_states, extra=extra,
            )
        D.barrier()
        return self.checkpoint_path

    def _read_checkpoint(self) -> dict | None:
        """Rank 0 reads ``last.pt`` (if any) and sends it to every rank (no shared disk needed for resume)."""
        ckpt = None
        if self.dist.is_main and self.checkpoint_path.exists():
            ckpt = load_checkpoint(self.checkpoint_path, expect_model=self.model_name, map_location="cpu")
        return D.broadcast_object(ckpt)

    def _resume(self, ckpt: dict) -> None:
        path = self.checkpoint_path
        mine = json.loads(json.dumps(config_dict(self.model_config), default=str))
        theirs = json.loads(json.dumps(ckpt["model_config"], default=str))
        if mine != theirs:
            keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"{path}: was written for another {self.model_name!r} model config (differs in {keys}); "
                             f"use another out_dir or delete the checkpoint to start over")
        try:
            self.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"{path}: the weights do not fit this {self.model_name!r} model ({err})") from None
        try:
            if ckpt.get("optimizer") is not None:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"{path}: the optimiser/scheduler state does not fit this run's "
                             f"({type(err).__name__}: {err})") from None
        critic_state = (ckpt.get("extra") or {}).get(CRITIC_STATE_KEY)
        if (critic_state is None) != (self.critic is None):
            has, run = ("no", "with") if critic_state is None else ("a", "without")
            raise ValueError(f"{path}: holds {has} critic state but this run is {run} a critic; "
                             f"use another out_dir or delete the checkpoint to start over")
        if self.critic is not None:
            try:
                self.critic.load_state_dict(critic_state)
            except (ValueError, KeyError, RuntimeError) as err:
                raise ValueError(f"{path}: the critic state does not fit this run's critic "
                                 f"({type(err).__name__}: {err})") from None
        self.step = self.resumed_from = int(ckpt["step"])
        per_rank = ckpt.get("rng_per_rank") or ([ckpt["rng"]] if ckpt.get("rng") is not None else [])
        if len(per_rank) == self.dist.world_size:
            set_rng_state(per_rank[self.dist.rank])
        else:
            # another process count: the batches are still exact, in-step randomness is reseeded
            warnings.warn(f"{path}: written by {len(per_rank)} process(es), resumed on {self.dist.world_size}; "
                          f"RNG states are reseeded from (seed, rank, step), so the run is not bitwise "
                          f"identical to an uninterrupted one", stacklevel=3)
            seed_everything(self.config.seed + D.RANK_SEED_STRIDE * self.dist.rank + self.step)

    def _trim_logs(self) -> list[dict]:
        """Keep log rows up to the resumed step (later rows belong to the lost steps)."""
        path = self.out_dir / METRICS_JSONL
        rows = []
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row["step"] <= self.step:
                        rows.append(row)
        return rows

    def _write_logs(self, rows: list[dict]) -> None:
        with open(self.out_dir / METRICS_JSONL, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        with open(self.out_dir / METRICS_CSV, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    # ------------------------------------------------------------------ loop
    def _next_batch(self, iterator):
        if callable(self.batches):
            return self.batches(self.step)
        try:
            return next(iterator)
        except StopIteration:
            raise ValueError(f"batches: the iterable ran out at step {self.step} of {self.config.steps}") from None

    def fit(self) -> dict:
        """Train up to ``config.steps``; returns ``{"step", "resumed_from", "metrics", "out_dir", "checkpoint", "rows"}``.

        ``metrics`` is the last logged row, ``rows`` every logged row; with ``diagnose_every``
        a ``"diagnostics"`` entry holds :func:`~facelab.train.diagnostics.summarize_shares` of them.
        """
        cfg = self.config
        self.dist = D.init_distributed(self.device)
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / CONFIG_JSON).write_text(json.dumps(self._config_record(), indent=2, default=str))
            # partial checkpoints of a run killed mid-write; last.pt itself is always whole
            for stale in self.out_dir.glob(f".{CHECKPOINT_NAME}.*{TMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
        ckpt = self._read_checkpoint()
        if ckpt is not None:
            self._resume(ckpt)
        else:
            seed_everything(cfg.seed + D.RANK_SEED_STRIDE * self.dist.rank)
            if self.critic is not None and self.dist.distributed:
                # like DDP for the model: every rank starts from rank 0's critic
                self.critic.load_state_dict(D.broadcast_object(self.critic.state_dict()))
        del ckpt
        # wrapped after resuming: DDP copies rank 0's weights to every rank when it is built
        forward = D.wrap_ddp(self.model, self.loss_fn, self.device) if self.dist.distributed else None
        rows = self._trim_logs() if main else []
        iterator = None if callable(self.batches) else iter(self.batches)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        n_in_row = 0
        start_time = time.perf_counter()
        bar = None
        if cfg.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.model_name}", unit="step")
        try:
            while self.step < cfg.steps:
                batch = self._next_batch(iterator)
                if self.dist.distributed:
                    batch = D.shard_batch(batch, self.dist.rank, self.dist.world_size)
                batch = _to_device(batch, self.device)
                self.model.train()
                if forward is None:
                    out = self.loss_fn(self.model, batch)
                else:
                    forward.train()
                    out = forward(batch)
                loss, metrics, terms = out if len(out) == 3 else (*out, None)
                # reduced before backward: every rank sees a NaN on any rank and stops together
                values = D.all_reduce_mean({"loss": loss.detach(), **metrics})
                if not (torch.isfinite(loss.detach()).all() and math.isfinite(values["loss"])):
                    raise NonFiniteLossError(self._nan_message(values["loss"]))
                # frozen parameters get grads too (e.g. Phase I's decoders); zero them so nothing
                # accumulates outside the checkpoint and clipping sees only what is trained
                if self._diagnose_now(terms):
                    values.update(term_gradient_shares(terms, self.diagnostic_modules))
                self.model.zero_grad(set_to_none=True)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self._trained_parameters(), cfg.grad_clip)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                if self.critic is not None:
                    critic_values = self.critic.step(self.model, batch, self.step)
                    clash = sorted(set(critic_values) & set(values))
                    if clash:
                        raise ValueError(f"critic: its metrics {clash} clash with the loss's; rename them")
                    values.update(D.all_reduce_mean(critic_values))
                self.step += 1
                if self._heldout_now():
                    values.update(self._measure_heldout())
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1  # diagnostics are only there on some steps
                n_in_row += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    row = {"step": self.step, **{k: v / counts[k] for k, v in sums.items()},
                           "lr": self.optimizer.param_groups[0]["lr"], "time_s": round(time.perf_counter() - start_time, 3)}
                    rows.append(row)
                    if main:
                        self._write_logs(rows)
                    sums, counts, n_in_row = {}, {}, 0
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4g}")
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self.save()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        result = {"step": self.step, "resumed_from": self.resumed_from, "metrics": rows[-1] if rows else {},
                  "out_dir": self.out_dir, "checkpoint": self.checkpoint_path, "rows": rows}
        if any(k.startswith(SHARE_PREFIX) for row in rows for k in row):
            result["diagnostics"] = summarize_shares(rows, chance=self.chance)
        return result

    def _heldout_now(self) -> bool:
        every = self.config.heldout_every
        if not every or self.heldout is None or not self.dist.is_main:
            return False
        return self.step % every == 0 or self.step == self.config.steps

    @torch.no_grad()
    def _measure_heldout(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            found = self.heldout(self.model)
        finally:
            self.model.train(was_training)
        return {f"{HELDOUT_PREFIX}{k}": float(v) for k, v in found.items()}

    def _diagnose_now(self, terms) -> bool:
        every = self.config.diagnose_every
        if not every or (self.step + 1) % every:
            return False
        if terms is None or not self.diagnostic_modules:
            raise ValueError("diagnose_every: needs a loss that returns (loss, metrics, terms) and diagnostic_modules")
        # under DDP the extra backward passes would run outside the reducer's bookkeeping
        return not self.dist.distributed

    def _trained_parameters(self) -> list[torch.Tensor]:
        """The parameters the optimiser updates (gradient clipping looks at these only)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _nan_message(self, loss: float) -> str:
        if self.checkpoint_path.exists():
            good = f"the last good checkpoint is {self.checkpoint_path} (step {load_checkpoint(self.checkpoint_path)['step']})"
        else:
            good = f"no checkpoint was written yet in {self.out_dir}"
        value = "NaN" if math.isnan(loss) else "Inf"
        return (f"step {self.step + 1}: the loss is {value}; training stopped before updating the weights, "
                f"{good}. Lower the learning rate or check the batch for bad values.")


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """A training log as columns: ``{"step": (N,), "loss": (N,), ...}`` float arrays.

    ``path`` is a trainer's run folder (its ``metrics.csv`` is read) or the CSV file itself.
    A value a row did not log (a metric of another stage) is NaN.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / METRICS_CSV).write_text("step,loss,acc\\n1,0.5,\\n2,0.25,0.75\\n")
    >>> m = read_metrics(d); m["loss"].tolist(), bool(np.isnan(m["acc"][0]))
    ([0.5, 0.25], True)
    """
    path = Path(path)
    path = path / METRICS_CSV if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"path: {path} is not a training log ({METRICS_CSV})")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"path: {path} holds no logged rows")
    return {key: np.array([float(row[key]) if row.get(key) not in ("", None) else np.nan for row in rows])
            for key in rows[0]}
