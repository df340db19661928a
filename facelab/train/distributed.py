"""Multi-process training helpers: torchrun detection, DDP wrapping, batch sharding, reductions.

:class:`~facelab.train.trainer.Trainer` uses these so that every recipe runs unchanged under
``torchrun --nproc_per_node N`` (one host) or torchrun's rendezvous (several hosts):

* :func:`init_distributed` reads torchrun's environment (``WORLD_SIZE``, ``RANK``,
  ``LOCAL_RANK``) and starts the process group: ``gloo`` on CPU, ``nccl`` on CUDA (each
  process then uses ``cuda:LOCAL_RANK``). Without torchrun (or with one process) it does
  nothing and training is the plain single-process loop.
* Batches are pure functions of ``(seed, step)``, so every rank builds the same *global*
  batch and :func:`shard_batch` keeps its contiguous share (rank ``r`` of ``W`` takes rows
  ``[r B/W, (r+1) B/W)``). The shares are equal, so DDP's gradient average equals the
  single-process gradient of the global-batch mean loss.
* :class:`LossForward` runs the whole ``loss_fn(model, batch)`` inside one DDP forward. The
  loss callables receive the plain model and may call any of its methods
  (``model.encode``, ``model.decode``, ``model.classifier``, ``model(images)``, ...): DDP
  only needs *its* forward to enclose every use of the parameters, so gradients of all of
  them are averaged in the backward pass. ``find_unused_parameters=True`` lets a phase
  leave parameters without gradients (frozen encoder, unused heads).
* :func:`all_reduce_mean` averages the logged metrics over ranks (:func:`all_reduce_grads` the
  gradients of a network trained outside DDP, e.g. a GAN critic); only rank 0 writes files
  (:func:`is_main_process`), the others wait at :func:`barrier`.

Everything here is a no-op on one process, so the same code runs everywhere.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from facelab.config import resolve_device

#: rank ``r`` seeds its RNGs with ``seed + RANK_SEED_STRIDE * r`` (rank 0 = the single-process seed)
RANK_SEED_STRIDE = 1_000_003
ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")

_OWNS_GROUP = False  # True when facelab started the process group (and so destroys it at exit)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: ``rank`` of ``world_size``, ``local_rank`` on its host."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer in the environment (set by torchrun), got {raw!r}") from None


def dist_env() -> DistInfo:
    """The job layout torchrun put in the environment (one process when it is absent).

    >>> dist_env().world_size >= 1
    True
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), _env_int("LOCAL_RANK", dist.get_rank()), dist.get_world_size())
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, local, world)


def rank_device(device: str | torch.device) -> torch.device:
    """This process's device: ``device`` (``"auto"`` resolved by :func:`facelab.config.resolve_device`),
    with a bare ``"cuda"`` mapped to ``cuda:LOCAL_RANK`` under torchrun.

    >>> rank_device("cpu")
    device(type='cpu')
    """
    device = torch.device(resolve_device(device) if isinstance(device, str) else device)
    info = dist_env()
    if device.type == "cuda" and device.index is None and info.distributed:
        return torch.device("cuda", info.local_rank)
    return device


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Start the process group when launched by torchrun with more than one process.

    Backend: ``nccl`` when ``device`` is CUDA, else ``gloo``. Returns the job layout
    (``world_size == 1``: nothing was started). Safe to call repeatedly (a recipe with
    several phases builds several trainers).

    >>> init_distributed("cpu").world_size  # no torchrun here
    1
    """
    global _OWNS_GROUP
    info = dist_env()
    if not info.distributed or dist.is_initialized():
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = rank_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://")
    _OWNS_GROUP = True
    atexit.register(_destroy)
    return dist_env()


def _destroy() -> None:
    global _OWNS_GROUP
    if _OWNS_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _OWNS_GROUP = False


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run).

    >>> is_main_process()
    True
    """
    return dist_env().is_main


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average ``{name: float}`` over ranks (same names, same order on every rank).

    One ``all_reduce`` of a float64 vector; on one process, returns ``values`` as floats.

    >>> all_reduce_mean({"loss": 2.0})
    {'loss': 2.0}
    """
    names = list(values)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return {k: float(values[k]) for k in names}
    # the name count travels too, so ranks that log different metrics fail loudly
    vec = torch.tensor([float(len(names))] + [float(values[k]) for k in names], dtype=torch.float64,
                       device=_comm_device())
    world = dist.get_world_size()
    dist.all_reduce(vec)
    if round(float(vec[0]) / world) != len(names) or float(vec[0]) % world:
        raise RuntimeError(f"metrics: ranks logged different numbers of metrics (this rank: {names})")
    return {k: float(v) / world for k, v in zip(names, vec[1:].tolist())}


def all_reduce_grads(parameters) -> None:
    """Average the ``.grad`` of ``parameters`` over ranks, in place (what DDP does for the model).

    For networks trained outside DDP, e.g. a GAN critic with its own optimiser. Parameters
    without a gradient are skipped (every rank must skip the same ones); the gradients travel
    as one flat vector per dtype. A no-op on one process.

    >>> p = nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
    >>> all_reduce_grads([p]); p.grad.tolist()
    [3.0, 3.0]
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    world = dist.get_world_size()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        device = flat.device
        flat = flat.to(_comm_device())
        dist.all_reduce(flat)
        flat = (flat / world).to(device)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (pickled; the identity on one process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` on one process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _leading_sizes(batch, prefix: str = "batch") -> list[tuple[str, int]]:
    if isinstance(batch, torch.Tensor):
        return [(prefix, batch.shape[0])] if batch.dim() >= 1 else []
    if isinstance(batch, dict):
        return [s for k, v in batch.items() for s in _leading_sizes(v, f"{prefix}[{k!r}]")]
    if isinstance(batch, (list, tuple)):
        return [s for i, v in enumerate(batch) for s in _leading_sizes(v, f"{prefix}[{i}]")]
    return []


def _slice(batch, lo: int, hi: int):
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi] if batch.dim() >= 1 else batch
    if isinstance(batch, dict):
        return {k: _slice(v, lo, hi) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_slice(v, lo, hi) for v in batch)
    return batch


def shard_batch(batch, rank: int, world_size: int):
    """Rank ``rank``'s contiguous share of a global batch.

    Every tensor of ``batch`` (a tensor, or dicts / lists / tuples of them) with a leading
    dimension must have the same batch size ``B``, divisible by ``world_size``; rank ``r``
    keeps rows ``[r B/W, (r+1) B/W)``. 0-d tensors and other values are kept whole.

    >>> b = {"x": torch.arange(6).reshape(6, 1), "t": torch.tensor(1.0)}
    >>> shard_batch(b, 1, 3)["x"].flatten().tolist()
    [2, 3]

    Raises:
        ValueError: tensors of different batch sizes, or ``B`` not divisible by ``world_size``.
    """
    if world_size == 1:
        return batch
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
    sizes = _leading_sizes(batch)
    if not sizes:
        raise ValueError("batch: no tensor with a batch dimension to share between ranks")
    n = sizes[0][1]
    other = [f"{name} has {size}" for name, size in sizes if size != n]
    if other:
        raise ValueError(f"batch: every tensor must have the same batch size to be split between ranks; "
                         f"{sizes[0][0]} has {n} rows but {', '.join(other)}")
    if n % world_size:
        raise ValueError(f"batch_size: the global batch of {n} rows does not split evenly over {world_size} "
                         f"processes; use a multiple of {world_size} (equal shares make the gradient average "
                         f"equal the single-process gradient)")
    per = n // world_size
    return _slice(batch, rank * per, (rank + 1) * per)


class LossForward(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: the module DDP wraps.

    Running the whole loss inside one DDP forward lets the loss call any method of
    ``model`` (``encode``, ``decode``, ``classifier`` ...) and still have every
    parameter's gradient averaged across ranks. A ``loss_fn`` that is an ``nn.Module`` is
    registered too, so parameters or buffers it owns are synchronised as well.

    >>> net = nn.Linear(2, 1)
    >>> fwd = LossForward(net, lambda m, b: (m(b).sum(), {}))
    >>> fwd(torch.ones(3, 2))[0].shape
    torch.Size([])
    """

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model = model
        if isinstance(loss_fn, nn.Module):
            self.loss_module = loss_fn
        else:
            object.__setattr__(self, "_loss_callable", loss_fn)

    def forward(self, batch):
        loss_fn = self.loss_module if "loss_module" in self._modules else self._loss_callable
        return loss_fn(self.model, batch)


def wrap_ddp(model: nn.Module, loss_fn, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(LossForward(model, loss_fn))`` (``LossForward`` alone on one process).

    The returned module is called with the (sharded) batch and returns ``(loss, metrics)``.
    """
    forward = LossForward(model, loss_fn)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return forward
    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # DDP cannot broadcast sparse tensors; sparse buffers (a mesh's graph Laplacians, up-sampling
    # matrices) are constants built identically on every rank, so DDP leaves them alone
    sparse = sparse_buffer_names(forward)
    if sparse:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(forward, sparse)
    return nn.parallel.DistributedDataParallel(forward, device_ids=ids, find_unused_parameters=True)


def sparse_buffer_names(module: nn.Module) -> list[str]:
    """Fully qualified names of ``module``'s sparse buffers (which DDP cannot synchronise).

    >>> m = nn.Module(); m.register_buffer("L", torch.eye(2).to_sparse()); m.register_buffer("w", torch.ones(1))
    >>> sparse_buffer_names(m)
    ['L']
    """
    return [name for name, buf in module.named_buffers() if buf is not None and buf.is_sparse]
