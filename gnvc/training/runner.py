"""The training runner shared by the four trainings (VAE, DiT prior, Stage I, Stage II).

One loop for all of them, so checkpointing, resume, mixed precision, gradient accumulation,
progress and logging behave the same everywhere. A training supplies its trainable modules, its
parameters and a ``step_fn(trainer) -> {name: scalar tensor}`` returning one micro-batch's losses
(the key ``loss`` is back-propagated); the runner does the rest:

- **Checkpoints** (``run_dir/step-NNNNNNN/``): one ``state.safetensors`` with the trainable
  weights and buffers of every module, the optimizer's tensors and all RNG states (torch CPU and
  CUDA, the runner's own generator), plus ``trainer.json`` with the step, the scheduler and
  optimizer hyper-parameters, Python/NumPy RNG states and how many items each data stream has
  consumed. Written to a temporary directory and renamed, so a crash never leaves half a
  checkpoint; the last ``keep_checkpoints`` are kept.
- **Resume**: when ``run_dir`` holds a checkpoint written with the same config fingerprint, the
  run continues from it: weights, optimizer, scheduler, RNG and data positions are restored, so
  N steps straight and N/2 + resume + N/2 give identical weights (on CPU). A checkpoint of a
  different config is ignored (and reported), never silently mixed in.
- **Exported checkpoints** (``export_dir``, optional): after every checkpoint a compact copy —
  weights and Adam moments in bf16, the same ``trainer.json`` — replaces ``export_dir/``. It is
  small enough to commit, so a long training adds up across machines and sessions: a run whose
  ``run_dir`` is empty resumes from the export (upcast to float32) when its fingerprint matches.
  The swap is two renames (``export_dir`` → ``.NAME.old``, the new copy → ``export_dir``); a run
  killed between them leaves only ``.NAME.old``, which the next run puts back before resuming.
- **Mixed precision**: bf16 autocast on CUDA when ``amp`` (no loss scaling needed for bf16);
  float32 on CPU. **Gradient accumulation** over ``grad_accum`` micro-batches.
- **Logging**: ``log_dir/metrics.tsv`` (one row per logged step, the format ``dvc plots`` reads),
  ``log_dir/summary.json`` (final metrics, for ``dvc metrics``) and ``log_dir/loss.png``. Each is
  rewritten whole to a temporary and renamed, so a kill never truncates the log; a resumed run
  drops the rows past its checkpoint and logs those steps again: every step appears once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from gnvc.errors import ConfigError
from gnvc.faults import fault_point
from gnvc.training.distributed import WorkerGroup, current_group
from gnvc.training.stop import StopSignals, TrainingStopped

STATE_NAME = "state.safetensors"
META_NAME = "trainer.json"


@dataclass
class TrainConfig:
    """The knobs every training shares (a stage's ``params.yaml`` section feeds it)."""

    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.1
    grad_accum: int = 1
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast, CUDA only
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:N]
    resume: bool = True
    progress: bool = True
    # Adam's moments in the exports before the last (the last never has them): false makes each
    # committed export a third of the size, and a run resumed from one restarts Adam with a warm-up.
    export_moments: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainConfig:
        """Pick the known keys out of a stage's params section (the rest belongs to the stage)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in params.items() if k in known}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        cfg = cls(**kwargs)
        if cfg.steps < 1 or cfg.grad_accum < 1:
            raise ConfigError(f"steps and grad_accum must be ≥ 1, got {cfg.steps}, {cfg.grad_accum}")
        if cfg.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
        return cfg


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able config: a checkpoint resumes only into the config that wrote it."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DataStream:
    """An iterator that counts what it hands out, so a resumed run can fast-forward to the same item."""

    def __init__(
        self, factory: Callable[[], Iterator[Any]], skip: int = 0, select: Callable[[Any], Any] | None = None
    ) -> None:
        self._factory = factory
        self._it = factory()
        self._select = select  # a worker's share of each item (its rows of the global batch)
        self.consumed = 0
        for _ in range(skip):
            self.next()

    def next(self) -> Any:
        try:
            item = next(self._it)
        except StopIteration:  # a finite stream restarts (deterministically: same factory)
            self._it = self._factory()
            item = next(self._it)
        self.consumed += 1
        return item if self._select is None else self._select(item)

    __next__ = next

    def __iter__(self) -> DataStream:
        return self


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train plus persistent buffers: what changes during this training."""
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    state = module.state_dict()
    buffers = {n for n, _ in module.named_buffers()}
    return {k: v for k, v in state.items() if k in trainable or k in buffers}


class Trainer:
    """Runs ``cfg.steps`` optimisation steps of ``step_fn`` with checkpoints, resume and logging."""

    def __init__(
        self,
        name: str,
        modules: dict[str, nn.Module],
        parameters: list[nn.Parameter] | list[dict[str, Any]],
        cfg: TrainConfig,
        *,
        run_dir: str | Path,
        log_dir: str | Path | None = None,
        config_fingerprint: str = "",
        export_dir: str | Path | None = None,
        shard: list[nn.Module] | None = None,
    ) -> None:
        self.name = name
        self.modules = modules
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.device = resolve_device(cfg.device)
        self.fingerprint = config_fingerprint or fingerprint(asdict(cfg))
        params = list(parameters)
        if not params:
            raise ConfigError(f"{name}: nothing to train (no parameter requires grad)")
        # Data-parallel worker group (gnvc.training.distributed), None in a single-process run.
        self.group: WorkerGroup | None = current_group()
        self.is_main = self.group is None or self.group.is_main
        # FSDP2 (gnvc.training.fsdp): ``shard`` modules are split over the workers, when there are several.
        self.sharded = bool(shard) and self.group is not None and self.group.world_size > 1
        if self.sharded:
            from gnvc.training.fsdp import shard_modules

            assert self.group is not None and shard
            self.group.broadcast(modules)  # every shard comes from rank 0's weights
            groups = params if isinstance(params[0], dict) else [{"params": params}]
            params = shard_modules(shard, modules, groups, self.group.world_size, self.device)
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            foreach=False if self.sharded else None,  # multi-tensor kernels cannot mix DTensor shards and tensors
        )
        self._phase: tuple[int, int] | None = None  # see new_phase()
        self._restart: tuple[int, int] | None = None  # (step, warm-up) after a resume without moments
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.step = 0
        self.streams: dict[str, DataStream] = {}
        self._skip: dict[str, int] = {}
        self.history: list[dict[str, float]] = []
        self.resumed_from: int | None = None
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self._recover_export()
        if cfg.resume:
            self._try_resume()

    # ------------------------------------------------------------------ helpers for step functions
    def new_phase(self, start: int, warmup_steps: int) -> None:
        """Declare that the objective changes at step ``start`` (e.g. the VAE's images → clips).

        From ``start`` on the learning rate warms up again over ``warmup_steps`` (on top of the
        schedule), and :meth:`fit` resets the optimizer (:meth:`reset_optimizer`) before step ``start``.
        Call it before :meth:`fit`, every run: it is derived from the config, not stored, so a
        resumed run follows the same schedule.
        """
        self._phase = (int(start), max(1, int(warmup_steps)))

    def reset_optimizer(self) -> None:
        """Forget the optimizer's moments: a new phase starts like a fresh Adam.

        Adam's moments from the previous phase mis-scale the new one's first updates: a weight
        that had no gradient before (a temporal tap that only ever saw padding) has a second moment
        near 0 but a step count in the thousands, so bias correction no longer helps and its first
        updates are several times the learning rate (the base VAE lost 5 dB in 50 steps that way).
        """
        self.optimizer.state.clear()

    def _lr_factor(self, step: int) -> float:
        factor = self._schedule(step)
        for phase in (self._phase, self._restart):
            if phase is not None and phase[0] <= step < phase[0] + phase[1]:
                factor *= (step - phase[0] + 1) / phase[1]
        return factor

    def _schedule(self, step: int) -> float:
        c = self.cfg
        if c.warmup_steps and step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        if c.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps))
        return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def stream(self, name: str, factory: Callable[[], Iterator[Any]]) -> DataStream:
        """A named, resumable data stream (fast-forwarded to where the checkpoint left it)."""
        if name not in self.streams:
            select = self.group.shard if self.group is not None else None
            self.streams[name] = DataStream(factory, skip=self._skip.get(name, 0), select=select)
        return self.streams[name]

    def autocast(self) -> Any:
        """bf16 autocast on CUDA when enabled; a no-op context on the CPU (float32 there)."""
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def randn(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Training noise from the runner's generator (so it is part of the checkpointed state)."""
        return self._draw(lambda s: torch.randn(s, generator=self.generator, dtype=dtype), shape)

    def rand(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        return self._draw(lambda s: torch.rand(s, generator=self.generator), shape)

    def randint(self, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return self._draw(lambda s: torch.randint(0, high, s, generator=self.generator), shape)

    def _draw(self, fn: Callable[[tuple[int, ...]], torch.Tensor], shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Per-sample values (dim 0 is the batch); a worker keeps its rows of the global batch's draw."""
        t = fn(tuple(shape)) if self.group is None else self.group.draw(fn, tuple(shape))
        return t.to(self.device)

    # ------------------------------------------------------------------ the loop
    def fit(self, step_fn: Callable[[Trainer], dict[str, torch.Tensor]]) -> dict[str, float]:
        """Train until ``cfg.steps``; returns the mean of each logged quantity over the last log window."""
        cfg = self.cfg
        for m in self.modules.values():
            m.train()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=self.name,
            disable=not (cfg.progress and self.is_main and sys.stderr.isatty()),  # bars on a terminal only
            dynamic_ncols=True,
            leave=False,
        )
        if self.group is not None:
            self.group.start(self.step, self.modules)
        # A worker group stops through Ray Train (its own checkpoints), not through signals.
        with StopSignals(self.name, enabled=self.group is None) as stop:
            last = self._loop(step_fn, stop, bar)
        bar.close()
        if self.resumed_from != self.step:  # a rerun of a finished run rewrites nothing (nor its export)
            self.save_checkpoint()
        for m in self.modules.values():
            m.eval()
        self._write_summary(last)
        return last

    def _loop(
        self, step_fn: Callable[[Trainer], dict[str, torch.Tensor]], stop: StopSignals, bar: Any
    ) -> dict[str, float]:
        """The steps up to ``cfg.steps``, returning the last log window's means; after a stop signal,
        the step in flight ends with a checkpoint and :class:`TrainingStopped`."""
        cfg = self.cfg
        window: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        t_start = time.perf_counter()
        while self.step < cfg.steps:
            if self._phase is not None and self.step == self._phase[0]:
                self.reset_optimizer()  # a run resumed past the switch already has the new phase's moments
            self.optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for _ in range(cfg.grad_accum):
                with self.autocast():
                    losses = step_fn(self)
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{self.name}: non-finite loss at step {self.step}: {loss.item()}")
                (loss / cfg.grad_accum).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
            if self.group is not None:  # gradients and logged losses of the global batch
                sums = self.group.sync(self.optimizer, sums)
            if cfg.grad_clip > 0:
                # Per parameter group: a group with its own objective (the entropy models' quantiles
                # and their auxiliary loss) must not shrink the main group's gradients.
                groups = self.optimizer.param_groups
                norms = [self._clip(g["params"], cfg.grad_clip) for g in groups]
                sums["grad_norm"] = float(norms[0])
            sums["lr"] = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            for k, v in sums.items():
                window.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss']:.4g}")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                last = {k: float(np.mean(v)) for k, v in window.items()}
                self._log(last, time.perf_counter() - t_start)
                window = {}
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
            if stop.signum is not None and self.step < cfg.steps:
                if not (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                    self.save_checkpoint()
                bar.close()
                tqdm.write(f"{self.name}: checkpointed at step {self.step}; the next run resumes there")
                raise TrainingStopped(self.name, self.step, stop.signum)
        return last

    def _clip(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        if not self.sharded:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        from gnvc.training.fsdp import clip_grad_norm

        assert self.group is not None
        return clip_grad_norm(params, max_norm, self.group.all_reduce_sum)

    def unsharded(self, module: nn.Module) -> nn.Module:
        """``module`` itself, or, when the Trainer sharded it, a plain copy with the trained weights
        (every rank must call it: the weights are gathered)."""
        if not self.sharded:
            return module
        from gnvc.training.fsdp import is_sharded, unshard

        if not any(is_sharded(p) for p in module.parameters()):
            return module
        return unshard(module)

    # ------------------------------------------------------------------ logging
    def _log(self, row: dict[str, float], seconds: float) -> None:
        entry = {"step": float(self.step), **row, "seconds": seconds}
        self.history.append(entry)
        if self.log_dir is None or not self.is_main:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        tsv = self.log_dir / "metrics.tsv"
        rows = self._read_tsv(tsv)
        # The file's rows up to where this run started (its checkpoint; none for a fresh run, e.g.
        # another config logging to the same log_dir), then this run's own rows.
        start = self.resumed_from or 0
        mine = {h["step"] for h in self.history[:-1]}  # this run's earlier rows (history ends with entry)
        rows = [r for r in rows if r.get("step", 0) <= start or r.get("step", 0) in mine]
        rows.append(entry)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines = ["\t".join(keys)] + ["\t".join(_fmt(r.get(k)) for k in keys) for r in rows]
        _atomic_write_text(tsv, "\n".join(lines) + "\n")

    @staticmethod
    def _read_tsv(path: Path) -> list[dict[str, float]]:
        if not path.is_file():
            return []
        lines = path.read_text().splitlines()
        if not lines:
            return []
        head = lines[0].split("\t")
        out = []
        for line in lines[1:]:
            vals = line.split("\t")
            out.append({k: float(v) for k, v in zip(head, vals, strict=False) if v != ""})
        return out

    def _write_summary(self, last: dict[str, float]) -> None:
        if self.log_dir is None or not self.is_main:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        workers = self.group.world_size if self.group is not None else 1
        summary = {
            "step": self.step,
            "workers": workers,
            "fsdp": self.sharded,
            **{k: round(v, 6) for k, v in last.items()},
        }
        _atomic_write_text(self.log_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        rows = self._read_tsv(self.log_dir / "metrics.tsv")
        if rows:
            plot_losses(rows, self.log_dir / "loss.png", title=self.name)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(self) -> list[Path]:
        if not self.run_dir.is_dir():
            return []
        return sorted(p for p in self.run_dir.glob("step-*") if (p / META_NAME).is_file())

    def _own_checkpoints(self) -> list[Path]:
        """This config's checkpoints, oldest first. Pruning looks only at these: a checkpoint of
        another config in the same ``run_dir`` (a run with other λs, say, at a higher step) is not
        this run's to delete, and counting it made the pruning delete the checkpoint just written."""
        own = []
        for c in self._checkpoints():
            try:
                if json.loads((c / META_NAME).read_text()).get("fingerprint") == self.fingerprint:
                    own.append(c)
            except (OSError, ValueError):
                continue
        return own

    def save_checkpoint(self) -> Path | None:
        """Write ``run_dir/step-NNNNNNN`` atomically and prune old checkpoints (rank 0 of a worker group
        writes, every rank then reports it; the others return ``None``)."""
        if self.group is not None and not self.is_main:
            if self.sharded:  # the all-gathers of the shards need every rank
                self._full_state()
            self.group.checkpoint_saved(None, self.step, self._last_logged())
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tensors, opt = self._full_state()
        opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
        for pid, st in opt["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{pid}.{k}"] = v
                else:
                    opt_meta["state"].setdefault(str(pid), {})[k] = v
            opt_meta["state"].setdefault(str(pid), {})
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        tensors["rng.generator"] = self.generator.get_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        np_state = np.random.get_state()
        meta = {
            "name": self.name,
            "step": self.step,
            "fingerprint": self.fingerprint,
            "optimizer": opt_meta,
            "scheduler": self.scheduler.state_dict(),
            "streams": {k: s.consumed for k, s in self.streams.items()},
            "rng_python": _jsonable(random.getstate()),
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "history": self.history,
        }
        final = self.run_dir / f"step-{self.step:07d}"
        tmp = self.run_dir / f".tmp-step-{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / STATE_NAME))
        (tmp / META_NAME).write_text(json.dumps(meta) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        fault_point("checkpoint-saved", self.step)
        for old in self._own_checkpoints()[: -max(1, self.cfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        if self.export_dir is not None:
            self._export(tensors, meta)
        if self.group is not None:
            self.group.checkpoint_saved(final, self.step, self._last_logged())
        return final

    def _full_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The trainable weights (``model.<module>.<key>``, full tensors on CPU) and the optimizer's
        state dict with its tensors whole and on CPU. A collective when sharded: every rank calls it."""
        gather = _identity
        if self.sharded:
            from gnvc.training.fsdp import full as gather

        def whole(t: torch.Tensor) -> torch.Tensor:
            return gather(t).detach().contiguous().cpu()

        tensors: dict[str, torch.Tensor] = {}
        for mname, module in self.modules.items():
            for k, v in _trainable_state(module).items():
                tensors[f"model.{mname}.{k}"] = whole(v)
        opt = self.optimizer.state_dict()  # its per-parameter dicts are the optimizer's own: copied
        opt["state"] = {
            pid: {k: whole(v) if torch.is_tensor(v) else v for k, v in st.items()} for pid, st in opt["state"].items()
        }
        return tensors, opt

    def _last_logged(self) -> dict[str, float]:
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "step"}

    def _export(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Replace ``export_dir`` with a bf16 copy of the checkpoint (floating tensors only).

        The export of the last step (``step == steps``), and every export with ``export_moments``
        off, leaves Adam's moments out: they are two thirds of its size, a finished stage is rebuilt
        from its weights alone, and every commit of an export stays in git's history. A run resumed
        from such an export with steps left restarts Adam with a warm-up (:meth:`load_checkpoint`).
        """
        if self.step >= self.cfg.steps or not self.cfg.export_moments:
            tensors = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
            meta = {**meta, "optimizer": {**meta["optimizer"], "state": {}}, "moments": False}
        small = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
        out = self.export_dir
        tmp = out.parent / f".{out.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(small, str(tmp / STATE_NAME))
        (tmp / META_NAME).write_text(json.dumps({**meta, "history": meta["history"][-200:]}) + "\n")
        fault_point("export-written", self.step)
        self._recover_export()  # never delete the only complete copy below
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        fault_point("export-swapped", self.step)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)

    def _recover_export(self) -> None:
        """Put ``.NAME.old`` back as ``export_dir`` when a run died between the export's renames.

        Without this the next export would delete ``.NAME.old`` — the only copy — and a machine
        with an empty ``run_dir`` would start from scratch.
        """
        if self.export_dir is None or self.export_dir.exists():
            return
        old = self.export_dir.parent / f".{self.export_dir.name}.old"
        if (old / META_NAME).is_file() and (old / STATE_NAME).is_file():
            old.rename(self.export_dir)
            tqdm.write(f"{self.name}: recovered {self.export_dir} from {old} (an earlier run died mid-export)")

    def _try_resume(self) -> None:
        candidates = self._checkpoints()
        if self.export_dir is not None and (self.export_dir / META_NAME).is_file():
            candidates.append(self.export_dir)
        resume_dir = self.group.resume_dir if self.group is not None else None
        if resume_dir is not None and (resume_dir / META_NAME).is_file():
            candidates.append(resume_dir)  # the checkpoint Ray Train restored after a worker died
        step_of = {c: int(json.loads((c / META_NAME).read_text()).get("step", -1)) for c in candidates}
        # Newest first; at equal steps the full-precision run_dir copy wins over the bf16 export.
        for ckpt in sorted(candidates, key=lambda c: (step_of[c], c != self.export_dir), reverse=True):
            meta = json.loads((ckpt / META_NAME).read_text())
            if meta.get("fingerprint") != self.fingerprint:
                tqdm.write(f"{self.name}: ignoring {ckpt} (written by a different config)")
                continue
            self.load_checkpoint(ckpt)
            return

    def load_checkpoint(self, ckpt: str | Path) -> None:
        """Restore weights, optimizer, scheduler, RNG and data positions from a checkpoint."""
        from gnvc.models.schema import validate_checkpoint

        ckpt = Path(ckpt)
        validate_checkpoint(ckpt, self.modules)  # data only: checked before anything is restored
        meta = json.loads((ckpt / META_NAME).read_text())
        tensors = load_file(str(ckpt / STATE_NAME))
        # An exported checkpoint holds bf16 copies: back to each parameter's own dtype (float32).
        tensors = {k: v.float() if v.dtype == torch.bfloat16 else v for k, v in tensors.items()}
        for mname, module in self.modules.items():
            prefix = f"model.{mname}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            expected = set(_trainable_state(module))
            if set(state) != expected:
                raise ConfigError(f"{ckpt}: checkpoint of {mname!r} does not match the model being trained")
            if self.sharded:  # this rank's shard of each full tensor read from the file
                from gnvc.training.fsdp import shard_like

                current = module.state_dict()
                state = {k: shard_like(v, current[k]) for k, v in state.items()}
            missing_ok = module.load_state_dict(state, strict=False)
            if missing_ok.unexpected_keys:
                raise ConfigError(f"{ckpt}: unexpected keys {missing_ok.unexpected_keys[:3]}")
        opt_meta = meta["optimizer"]
        opt_state: dict[int, dict[str, Any]] = {}
        for pid, extra in opt_meta["state"].items():
            opt_state[int(pid)] = dict(extra)
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
        if meta.get("moments", True) is False and int(meta["step"]) < self.cfg.steps:
            # An export without moments (a finished stage's, extended, or export_moments off): a fresh
            # Adam at the schedule's LR would take steps of ≈ lr on every weight at once, so it warms
            # up as at a phase switch.
            self._restart = (int(meta["step"]), max(1, self.cfg.warmup_steps))
            tqdm.write(f"{self.name}: {ckpt} holds no optimizer moments: fresh Adam, LR warm-up")
        if self.sharded:
            from gnvc.training.fsdp import is_sharded, shard_like

            for p, st in self.optimizer.state.items():
                for k, v in st.items():
                    if is_sharded(p) and torch.is_tensor(v) and not is_sharded(v) and v.shape == p.shape:
                        st[k] = shard_like(v, p)
        self.scheduler.load_state_dict(meta["scheduler"])
        if self._restart is not None:  # this step's LR, warm-up included (the stored one ended the old run)
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                group["lr"] = base * self._lr_factor(int(meta["step"]))
        torch.set_rng_state(tensors["rng.torch_cpu"])
        self.generator.set_state(tensors["rng.generator"])
        if torch.cuda.is_available():
            states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        random.setstate(_tuplify(meta["rng_python"]))
        n = meta["rng_numpy"]
        np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
        self.step = int(meta["step"])
        self._skip = {k: int(v) for k, v in meta["streams"].items()}
        self.streams = {}
        self.history = list(meta.get("history", []))
        self.resumed_from = self.step


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (temporary sibling + rename): a kill mid-write leaves the
    previous version, never a truncated file that would lose or duplicate logged steps."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.6g}"


def _jsonable(obj: Any) -> Any:
    return [_jsonable(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _tuplify(obj: Any) -> Any:
    return tuple(_tuplify(o) for o in obj) if isinstance(obj, list) else obj


def plot_losses(rows: list[dict[str, float]], path: Path, *, title: str) -> None:
    """A PNG of every loss-like column against the step (``dvc plots`` HTML needs a CDN; PNGs don't)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "seconds", "lr", "grad_norm"}
    keys = [k for k in rows[-1] if k not in skip]
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in rows]
    positive = True
    for k in keys:
        vals = [r.get(k, float("nan")) for r in rows]
        positive &= all(v > 0 for v in vals if not math.isnan(v))
        ax.plot(steps, vals, label=k)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
