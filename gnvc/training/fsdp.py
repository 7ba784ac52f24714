"""Fully sharded data parallelism (PyTorch FSDP2) for the DiT when it trains in full.

Why: with plain data parallelism every worker holds the whole DiT, its gradients and both Adam
moments in float32 — 16 bytes per parameter, 22.7 GB for Wan2.1-1.3B before any activation
(docs/training.md). ``fully_shard`` keeps 1/N of that per worker and all-gathers one block's
weights at a time around its forward and backward. It does not shard activations (the memory
model in docs/training.md says when those need block checkpointing or sequence parallelism).

How it fits the Trainer's own data parallelism (:mod:`gnvc.training.distributed`), which still
splits the batches and noise and all-reduces every parameter that is not sharded (codec, adapter):

- **Sharding** happens in the Trainer, before the optimizer exists: each block of the module's
  ``ModuleList`` children, then the module itself (FSDP2's usual granularity: one all-gather per
  transformer block). Every rank first takes rank 0's weights, so the shards come from one model.
  FSDP2 replaces each parameter by a new DTensor shard, so the optimizer's parameter groups are
  rebuilt by parameter name: same groups, same order, and the checkpoint's optimizer ids mean
  the same thing with and without sharding.
- **Gradients** of sharded parameters are reduce-scattered (averaged over ranks) by FSDP itself;
  the group's all-reduce skips them. Gradient clipping sums the squared norms of the local shards
  over ranks (``clip_grad_norm_`` cannot mix DTensor and plain gradients), and AdamW runs its
  per-parameter loop (``foreach=False``), as its multi-tensor kernels cannot mix them either.
- **Checkpoints** hold full tensors: every rank takes part in the all-gather, rank 0 writes. The
  files are exactly those of an unsharded run, so a run resumes at any world size, sharded or not;
  on resume each rank keeps its own shard of the full tensors it read.
- **The result**: :func:`unshard` gathers the trained module into a plain copy of its own class
  (diffusers models are their config plus their weights), which the stage saves as usual.

Nothing here is imported in a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from gnvc.errors import ConfigError


def is_sharded(t: Any) -> bool:
    return isinstance(t, DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (an all-gather for a shard: every rank must call it, in the same order)."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(value: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``value`` (a full tensor every rank holds) laid out like ``ref``: this rank's shard of it."""
    if not is_sharded(ref):
        return value
    mesh = ref.device_mesh
    return distribute_tensor(value.to(mesh.device_type), mesh, ref.placements, src_data_rank=None)


def shard_modules(
    targets: list[nn.Module],
    owners: dict[str, nn.Module],
    groups: list[dict[str, Any]],
    world_size: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Shard each of ``targets`` (a submodule of one of ``owners``) over the ``world_size`` ranks;
    returns ``groups`` with every parameter replaced by its sharded successor (matched by name)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    names = {id(p): (key, n) for key, m in owners.items() for n, p in m.named_parameters()}
    mesh = init_device_mesh(device.type, (world_size,))
    for target in targets:
        if not hasattr(target, "config") or not hasattr(type(target), "from_config"):
            raise ConfigError(f"FSDP shards diffusers models (config + weights), not {type(target).__name__}")
        target.to(device)
        for child in target.children():
            if isinstance(child, nn.ModuleList):
                for block in child:
                    fully_shard(block, mesh=mesh)
        fully_shard(target, mesh=mesh)
    now = {(key, n): p for key, m in owners.items() for n, p in m.named_parameters()}
    return [{**g, "params": [now[names[id(p)]] if id(p) in names else p for p in g["params"]]} for g in groups]


def clip_grad_norm(
    params: list[torch.Tensor], max_norm: float, all_reduce: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``clip_grad_norm_`` over plain and sharded gradients; returns the total norm (before clipping).

    Plain gradients are the same on every rank (already all-reduced); a sharded gradient's squared
    norm is the sum over ranks of its local shard's, hence the all-reduce of those alone.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    plain = torch.zeros((), dtype=torch.float64)
    local = torch.zeros((), dtype=torch.float64)
    for g in grads:
        if is_sharded(g):
            local += g.to_local().detach().double().pow(2).sum().cpu()
        else:
            plain += g.detach().double().pow(2).sum().cpu()
    total = (plain + all_reduce(local)).sqrt()
    coef = min(1.0, max_norm / (float(total) + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total.float()


def unshard(module: nn.Module) -> nn.Module:
    """A plain (unsharded) copy of a sharded diffusers model, on CPU: a collective, every rank calls it.

    FSDP2 turned ``module`` into a subclass of its own class with hooks and DTensor parameters;
    ``save_pretrained`` of that would write shards and the wrong class name. The copy is built
    from the model's config and loaded with the gathered weights, with ``requires_grad`` as before.
    """
    from torch.distributed.fsdp import FSDPModule

    cls = type(module)
    if issubclass(cls, FSDPModule):
        cls = next(b for b in cls.__mro__[1:] if not issubclass(b, FSDPModule) and issubclass(b, nn.Module))
    state = {k: full(v).detach().cpu() for k, v in module.state_dict().items()}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    plain = cls.from_config(module.config)
    plain.load_state_dict(state, strict=True)
    for n, p in plain.named_parameters():
        p.requires_grad_(n in trainable)
    return plain
