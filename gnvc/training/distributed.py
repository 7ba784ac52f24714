"""Data parallelism inside the shared :class:`~gnvc.training.runner.Trainer` (one process per worker).

Why this and not ``DistributedDataParallel``: the stages call ``vae.encode``/``codec.forward``/
``refiner.velocity`` … rather than one module's ``forward``, so DDP's hooks would not see most of
the computation (and several trainings hold more than one module). Instead the Trainer asks the
:class:`WorkerGroup` of its process (``None`` in an ordinary single-process run) at four points,
and the stage code does not change:

- **Data**: each item a named data stream yields is the *global* batch (the stage's
  ``batch_size``); rank ``r`` of ``N`` keeps rows ``[r·B/N, (r+1)·B/N)``. So N workers together
  train on exactly the batches one process would, and a stream's position (how many global
  batches it handed out) means the same thing at every world size: a checkpoint written by
  2 workers resumes under 1 and the other way round.
- **Noise**: ``trainer.randn/rand/randint`` draw per-sample values (dim 0 is the batch). Every
  rank draws the global batch's values from the runner's generator and keeps its rows, so the
  generator advances as in one process and sample ``i`` gets the noise it would get there.
- **Gradients**: after the micro-batches of a step, one all-reduce per dtype bucket averages the
  gradients (DDP's arithmetic: each rank's mean-over-its-rows gradient, summed, divided by N,
  which is the global batch's mean gradient because every rank has B/N rows). Parameters that
  got no gradient on any rank keep ``grad = None`` (AdamW then skips them, as in one process);
  one that got a gradient on some rank only gets zeros elsewhere. The logged losses are averaged
  the same way, so the loss curve is the global batch's. Weights are broadcast from rank 0 when
  ``fit`` starts; after that every rank applies the same update to the same weights.
- **Files**: rank 0 alone writes checkpoints, exports and logs; every rank then calls
  :meth:`WorkerGroup.checkpoint_saved`, which the Ray Train launcher
  (:mod:`gnvc.training.ray_train`) turns into ``ray.train.report`` (all ranks must report).

- **Sharding**: a DiT trained in full is split over the ranks with FSDP2 instead of replicated
  (:mod:`gnvc.training.fsdp`); its parameters are DTensors, which the broadcast and the gradient
  all-reduce here leave to FSDP.

Needs ``torch.distributed`` initialised (Ray Train's ``TorchTrainer`` does it: gloo on CPU, NCCL
on GPU). Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gnvc.errors import ConfigError

BUCKET_BYTES = 64 << 20  # gradients flattened into all-reduce buckets of at most this size (per dtype)


class WorkerGroup:
    """This process's place in a data-parallel group of ``world_size`` workers.

    ``on_checkpoint(path_or_None, step, metrics)`` is called on every rank after each checkpoint
    (``path`` on rank 0, ``None`` elsewhere); ``resume_dir`` is an extra checkpoint the Trainer
    may resume from (the one Ray Train restored after a worker died).
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        *,
        on_checkpoint: Callable[[Path | None, int, dict[str, float]], None] | None = None,
        resume_dir: Path | None = None,
        device: torch.device | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a group of {world_size}")
        self.rank = rank
        self.world_size = world_size
        self.on_checkpoint = on_checkpoint
        self.resume_dir = resume_dir
        self.device = device  # this worker's GPU (NCCL collectives need CUDA tensors); None on CPU
        self.start_step: int | None = None  # the step fit() started from (> 0: resumed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ data and noise
    def shard(self, item: Any) -> Any:
        """This rank's rows of a global batch (tensors split on dim 0; tuples, lists, dicts recursed)."""
        if torch.is_tensor(item):
            b = item.shape[0] if item.dim() else 0
            if b % self.world_size:
                raise ConfigError(
                    f"a batch of {b} cannot be split over {self.world_size} workers: "
                    "use a batch size divisible by --workers"
                )
            n = b // self.world_size
            return item[self.rank * n : (self.rank + 1) * n]
        if isinstance(item, tuple | list):
            return type(item)(self.shard(v) for v in item)
        if isinstance(item, dict):
            return {k: self.shard(v) for k, v in item.items()}
        raise ConfigError(f"cannot split a data stream item of type {type(item).__name__} over workers")

    def draw(self, fn: Callable[[tuple[int, ...]], torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """``fn`` for the global batch (dim 0 × world size), this rank's rows of it."""
        if not shape:
            raise ConfigError("a worker group draws per-sample noise: give the batch as dim 0")
        return self.shard(fn((shape[0] * self.world_size, *shape[1:])))

    # ------------------------------------------------------------------ collectives
    def _collective(self, t: torch.Tensor, op: Callable[[torch.Tensor], Any]) -> torch.Tensor:
        """Run ``op`` in place on ``t``, through a copy where the backend needs another device
        (gloo: CPU tensors; NCCL: CUDA tensors on this worker's GPU)."""
        import torch.distributed as dist

        nccl = dist.get_backend() == "nccl"
        if t.is_cuda == nccl:
            op(t)
            return t
        tmp = t.to(self.device if self.device is not None else torch.device("cuda")) if nccl else t.cpu()
        op(tmp)
        t.copy_(tmp)
        return t

    def _all_reduce(self, t: torch.Tensor, max_: bool = False) -> torch.Tensor:
        import torch.distributed as dist

        red = dist.ReduceOp.MAX if max_ else dist.ReduceOp.SUM
        return self._collective(t, lambda x: dist.all_reduce(x, op=red))

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(t)

    def broadcast(self, modules: dict[str, nn.Module]) -> None:
        """Copy rank 0's weights and buffers to every rank (FSDP shards: each rank keeps its own)."""
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        with torch.no_grad():
            for module in modules.values():
                for t in module.state_dict().values():
                    if not isinstance(t, DTensor):
                        self._collective(t, lambda x: dist.broadcast(x, src=0))

    def start(self, step: int, modules: dict[str, nn.Module]) -> None:
        """Check every rank resumed at the same step, then copy rank 0's weights and buffers to all."""
        self.start_step = step
        steps = torch.tensor([step, -step], dtype=torch.int64)
        self._all_reduce(steps, max_=True)
        if int(steps[0]) != -int(steps[1]):
            raise ConfigError(
                f"workers resumed at different steps ({-int(steps[1])}..{int(steps[0])}): "
                "their run_dir/export_dir differ; give every worker the same shared directories"
            )
        self.broadcast(modules)

    def sync(self, optimizer: torch.optim.Optimizer, sums: dict[str, float]) -> dict[str, float]:
        """Average the gradients of ``optimizer``'s parameters and the step's logged values over ranks.

        FSDP-sharded parameters (DTensors) are left out: FSDP reduce-scattered their gradients already.
        """
        from torch.distributed.tensor import DTensor

        params = [
            p for g in optimizer.param_groups for p in g["params"] if p.requires_grad and not isinstance(p, DTensor)
        ]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        self._all_reduce(has, max_=True)
        grads = []
        for p, h in zip(params, has.tolist(), strict=True):
            if h and p.grad is None:
                p.grad = torch.zeros_like(p)
            if p.grad is not None:
                grads.append(p.grad)
        for bucket in _buckets(grads):
            flat = torch._utils._flatten_dense_tensors(bucket)
            flat.div_(self.world_size)
            self._all_reduce(flat)
            for g, v in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket), strict=True):
                g.copy_(v)
        keys = sorted(sums)
        vals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        self._all_reduce(vals)
        return {k: float(v) / self.world_size for k, v in zip(keys, vals.tolist(), strict=True)}

    def checkpoint_saved(self, path: Path | None, step: int, metrics: dict[str, float]) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, step, metrics)


def _buckets(grads: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Gradients grouped by (dtype, device), each group cut into buckets of ≤ BUCKET_BYTES."""
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.dtype, g.device), []).append(g)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for g in group:
            nbytes = g.numel() * g.element_size()
            if bucket and size + nbytes > BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
            bucket.append(g)
            size += nbytes
        if bucket:
            yield bucket


_CURRENT: WorkerGroup | None = None


def current_group() -> WorkerGroup | None:
    """The worker group this process trains in (``None``: an ordinary single-process run)."""
    return _CURRENT


@contextmanager
def joined(group: WorkerGroup) -> Iterator[WorkerGroup]:
    """Make ``group`` the one every :class:`Trainer` created inside the block trains in."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, group
    try:
        yield group
    finally:
        _CURRENT = previous
