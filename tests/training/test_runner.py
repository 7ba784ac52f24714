"""The shared runner: resume is exact, checkpoints are complete, logs are what `dvc plots` reads."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gnvc.refiner import Refiner
from gnvc.training.losses import flow_matching_loss
from gnvc.training.runner import STATE_NAME, TrainConfig, Trainer


class Interrupted(Exception):
    pass


def _latent_batches(seed: int) -> Iterator[torch.Tensor]:
    """A deterministic stream standing in for a shard reader: same seed, same batches."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):  # finite: the stream must restart the same way after StopIteration
        yield torch.randn(2, 16, 2, 4, 4, generator=g)


def _cfg(steps: int) -> TrainConfig:
    return TrainConfig(
        steps=steps, lr=3e-3, warmup_steps=2, grad_accum=2, checkpoint_every=3, log_every=2, seed=7, progress=False
    )


def _train(
    refiner_cfg: dict[str, Any],
    run_dir: Path,
    steps: int,
    *,
    crash_at: int | None = None,
    signals_at: dict[int, list[int]] | None = None,
    log_dir: Path | None = None,
    export_dir: Path | None = None,
    config_fingerprint: str = "",
    export_moments: bool = True,
) -> tuple[Refiner, Trainer]:
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    params = refiner.set_tuning("full")
    cfg = _cfg(steps)
    cfg.export_moments = export_moments
    trainer = Trainer(
        "prior",
        {"refiner": refiner},
        params,
        cfg,
        run_dir=run_dir,
        log_dir=log_dir,
        export_dir=export_dir,
        config_fingerprint=config_fingerprint,
    )
    stream = trainer.stream("latents", lambda: _latent_batches(3))

    def step(tr: Trainer) -> dict[str, torch.Tensor]:
        if crash_at is not None and tr.step == crash_at:
            raise Interrupted
        for sig in (signals_at or {}).pop(tr.step, []):  # sent once, in the step's first micro-batch
            os.kill(os.getpid(), sig)
        x1 = next(stream)
        x0 = tr.randn(x1.shape)
        t = tr.rand((x1.shape[0],))
        loss = flow_matching_loss(refiner, x1, x0, t)
        return {"loss": loss}

    trainer.fit(step)
    return refiner, trainer


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(refiner_cfg, tmp_path):
    """A scheduler's SIGTERM (or a first Ctrl-C) mid-step: the step finishes, is checkpointed
    although it is no checkpoint step (every 3), and the resumed run equals a straight one."""
    from gnvc.training.stop import TrainingStopped

    before = signal.getsignal(signal.SIGTERM)
    straight, _ = _train(refiner_cfg, tmp_path / "a", 8)
    with pytest.raises(TrainingStopped) as stopped:
        _train(refiner_cfg, tmp_path / "b", 8, signals_at={4: [signal.SIGTERM]})
    assert stopped.value.step == 5 and stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are fit's only
    assert (tmp_path / "b" / "step-0000005").is_dir()
    resumed, trainer = _train(refiner_cfg, tmp_path / "b", 8)
    assert trainer.resumed_from == 5
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_second_signal_stops_at_once(refiner_cfg, tmp_path):
    from gnvc.training.stop import TrainingStopped

    with pytest.raises(KeyboardInterrupt) as stopped:
        # SIGTERM: a backgrounded test run (`cmd &`) starts with SIGINT ignored, which StopSignals respects.
        _train(refiner_cfg, tmp_path / "b", 8, signals_at={4: [signal.SIGTERM, signal.SIGTERM]})
    assert not isinstance(stopped.value, TrainingStopped)
    assert sorted(p.name for p in (tmp_path / "b").glob("step-*")) == ["step-0000003"]


def test_straight_equals_interrupted_and_resumed(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    n = 8
    straight, _ = _train(refiner_cfg, tmp_path / "a", n)
    with pytest.raises(Interrupted):
        _train(refiner_cfg, tmp_path / "b", n, crash_at=n // 2 + 1)  # dies in step 5; last checkpoint: 3
    ckpts = sorted(p.name for p in (tmp_path / "b").glob("step-*"))
    assert ckpts == ["step-0000003"]
    resumed, trainer = _train(refiner_cfg, tmp_path / "b", n)
    assert trainer.resumed_from == 3
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The weights did move (the comparison is not trivially true).
    fresh = Refiner.from_config(refiner_cfg, seed=0).state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a)


def test_half_then_resume_to_full(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    """N straight vs N/2, then a new run configured for N resuming from N/2's final checkpoint."""
    n = 6
    straight, _ = _train(refiner_cfg, tmp_path / "a", n)
    # Half: the same run interrupted right after its step-3 checkpoint.
    with pytest.raises(Interrupted):
        _train(refiner_cfg, tmp_path / "b", n, crash_at=n // 2)
    resumed, _ = _train(refiner_cfg, tmp_path / "b", n)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_checkpoint_of_another_config_is_not_resumed(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    _train(refiner_cfg, tmp_path / "run", 3)
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    cfg = TrainConfig(steps=3, lr=1e-2, progress=False)  # different lr: different fingerprint
    trainer = Trainer("prior", {"refiner": refiner}, refiner.set_tuning("full"), cfg, run_dir=tmp_path / "run")
    assert trainer.resumed_from is None and trainer.step == 0


def test_pruning_keeps_this_runs_checkpoints_and_leaves_other_configs_alone(
    refiner_cfg: dict[str, Any], tmp_path: Path
) -> None:
    """A run dir holding another config's checkpoint at a higher step (Stage I restarted with other
    λs): the new run's pruning once counted it as the newest and deleted each checkpoint it wrote."""
    import json
    import shutil

    _train(refiner_cfg, tmp_path / "other", 3)
    foreign = tmp_path / "run" / "step-0000050"
    shutil.copytree(tmp_path / "other" / "step-0000003", foreign)
    meta = json.loads((foreign / "trainer.json").read_text())
    (foreign / "trainer.json").write_text(json.dumps({**meta, "step": 50, "fingerprint": "another-config"}))
    with pytest.raises(Interrupted):
        _train(refiner_cfg, tmp_path / "run", 8, crash_at=7)  # checkpoints at 3 and 6, dies in step 7
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == [
        "step-0000003", "step-0000006", "step-0000050",
    ]  # fmt: skip
    _, trainer = _train(refiner_cfg, tmp_path / "run", 8)
    assert trainer.resumed_from == 6
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-0000006", "step-0000008", "step-0000050"]
    assert json.loads((foreign / "trainer.json").read_text())["fingerprint"] == "another-config"


def test_checkpoint_contents_and_logs(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    _, trainer = _train(refiner_cfg, tmp_path / "run", 6, log_dir=tmp_path / "log")
    last = sorted((tmp_path / "run").glob("step-*"))[-1]
    from safetensors.torch import load_file

    tensors = load_file(str(last / STATE_NAME))
    assert any(k.startswith("model.refiner.transformer.") for k in tensors)
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)
    assert "rng.generator" in tensors and "rng.torch_cpu" in tensors
    meta = json.loads((last / "trainer.json").read_text())
    assert meta["step"] == 6 and meta["streams"] == {"latents": 12}  # 6 steps × 2 accumulated micro-batches
    assert meta["scheduler"]["last_epoch"] == 6
    rows = (tmp_path / "log" / "metrics.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["step", "loss"]
    assert [r.split("\t")[0] for r in rows[1:]] == ["2", "4", "6"]
    summary = json.loads((tmp_path / "log" / "summary.json").read_text())
    assert summary["step"] == 6 and summary["loss"] > 0
    assert (tmp_path / "log" / "loss.png").stat().st_size > 1000


def test_rerunning_a_finished_run_rewrites_no_checkpoint(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    """Nothing left to train: the last checkpoint and the committed export keep their bytes (a
    re-save would store the RNG state after loading, a needless new version in git)."""
    export = tmp_path / "export"
    _train(refiner_cfg, tmp_path / "run", 6, export_dir=export)
    files = sorted(p for p in [*tmp_path.joinpath("run").rglob("*"), *export.rglob("*")] if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    _, trainer = _train(refiner_cfg, tmp_path / "run", 6, export_dir=export)
    assert trainer.resumed_from == 6 and trainer.step == 6
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before


def test_resumed_log_has_no_duplicate_steps(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        _train(refiner_cfg, tmp_path / "run", 6, crash_at=5, log_dir=tmp_path / "log")
    _train(refiner_cfg, tmp_path / "run", 6, log_dir=tmp_path / "log")
    steps = [r.split("\t")[0] for r in (tmp_path / "log" / "metrics.tsv").read_text().splitlines()[1:]]
    assert steps == ["2", "4", "6"]


def test_a_fresh_run_starts_a_fresh_log(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    """Another config logging to the same log_dir (a restarted stage) keeps none of the old rows:
    an old step 3 must not sit between the new steps 2 and 4 under the new run's header."""
    _train(refiner_cfg, tmp_path / "run_a", 6, log_dir=tmp_path / "log")
    (tmp_path / "log" / "metrics.tsv").write_text("step\told_metric\n1\t9\n3\t9\n40\t9\n")
    _train(refiner_cfg, tmp_path / "run_b", 4, log_dir=tmp_path / "log")
    rows = (tmp_path / "log" / "metrics.tsv").read_text().splitlines()
    assert "old_metric" not in rows[0] and [r.split("\t")[0] for r in rows[1:]] == ["2", "4"]


def test_non_finite_loss_stops_the_run(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    cfg = TrainConfig(steps=2, progress=False)
    trainer = Trainer("x", {"r": refiner}, refiner.set_tuning("full"), cfg, run_dir=tmp_path)
    with pytest.raises(FloatingPointError):
        trainer.fit(lambda tr: {"loss": torch.tensor(float("nan"), requires_grad=True)})


def test_exported_checkpoint_resumes_on_another_machine(refiner_cfg, tmp_path):
    """The bf16 export (what gets committed) resumes a run whose run_dir is gone, at the same step."""
    export = tmp_path / "checkpoints" / "prior"
    with pytest.raises(Interrupted):
        _train(refiner_cfg, tmp_path / "run_a", 8, crash_at=7, export_dir=export)
    meta = json.loads((export / "trainer.json").read_text())
    assert meta["step"] == 6  # the last checkpoint (every 3 steps)
    from safetensors.torch import load_file

    state = load_file(str(export / STATE_NAME))
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.bfloat16 for v in floats)  # small enough to commit
    # A fresh machine: empty run_dir, only the export.
    resumed, trainer = _train(refiner_cfg, tmp_path / "run_b", 8, export_dir=export)
    assert trainer.resumed_from == 6 and trainer.step == 8
    straight, _ = _train(refiner_cfg, tmp_path / "run_c", 8)
    # Resumed from bf16 weights and moments: close to the straight run, not bit-identical.
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.allclose(a, b, atol=2e-2, rtol=0.05)


def test_a_finished_runs_export_holds_weights_only_and_extends_with_a_warm_up(refiner_cfg, tmp_path):
    """The last export leaves Adam's moments out (a third of the size to commit); raising ``steps``
    resumes from it with a fresh Adam whose LR warms up again instead of jumping to the schedule's."""
    from safetensors.torch import load_file

    export = tmp_path / "checkpoints" / "prior"
    same = {"export_dir": export, "config_fingerprint": "steps are not fingerprinted"}
    _train(refiner_cfg, tmp_path / "run_a", 6, **same)
    assert not [k for k in load_file(str(export / STATE_NAME)) if k.startswith("optim.")]
    assert json.loads((export / "trainer.json").read_text())["moments"] is False
    full = load_file(str(tmp_path / "run_a" / "step-0000006" / STATE_NAME))
    assert [k for k in full if k.startswith("optim.")]  # the run's own checkpoint keeps them
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    params = refiner.set_tuning("full")
    tr = Trainer("prior", {"refiner": refiner}, params, _cfg(9), run_dir=tmp_path / "run_b", **same)
    assert tr.resumed_from == 6 and not tr.optimizer.state
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * tr._schedule(6) / 2)  # warm-up 1 of 2
    extended, trainer = _train(refiner_cfg, tmp_path / "run_c", 9, **same)
    assert trainer.resumed_from == 6 and trainer.step == 9
    assert all(torch.isfinite(p).all() for p in extended.parameters())


def test_export_moments_off_exports_weights_only_and_resumes_with_a_warm_up(refiner_cfg, tmp_path):
    from safetensors.torch import load_file

    export = tmp_path / "checkpoints" / "prior"
    with pytest.raises(Interrupted):  # dies in step 5; the last checkpoint (and export) is step 3's
        _train(refiner_cfg, tmp_path / "run_a", 8, crash_at=4, export_dir=export, export_moments=False)
    meta = json.loads((export / "trainer.json").read_text())
    assert meta["step"] == 3 and meta["moments"] is False
    assert not [k for k in load_file(str(export / STATE_NAME)) if k.startswith("optim.")]
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    cfg = _cfg(8)
    cfg.export_moments = False
    tr = Trainer(
        "prior", {"refiner": refiner}, refiner.set_tuning("full"), cfg, run_dir=tmp_path / "b", export_dir=export
    )
    assert tr.resumed_from == 3 and not tr.optimizer.state
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * tr._schedule(3) / 2)  # warm-up 1 of 2
    _, trainer = _train(refiner_cfg, tmp_path / "run_c", 8, export_dir=export, export_moments=False)
    assert trainer.resumed_from == 3 and trainer.step == 8


def test_fingerprint_ignores_schedule_and_data_shape_but_not_the_model():
    """Extending steps or moving to longer clips resumes a run; another lr or profile starts over."""
    from gnvc.training.common import stage_fingerprint

    params = {"profile": "tiny", "seed": 0}
    base = {"lr": 1e-3, "steps": 100, "frames": 5, "batch_size": 2, "log_every": 10}
    fp = stage_fingerprint(params, base)
    assert stage_fingerprint(params, {**base, "steps": 5000, "frames": 17, "batch_size": 1, "log_every": 50}) == fp
    assert stage_fingerprint(params, {**base, "lr": 3e-4}) != fp
    assert stage_fingerprint({**params, "profile": "base"}, base) != fp
    # The previous stage's weights hash: a stage resumes only on top of the model it started from.
    assert stage_fingerprint(params, base, "e07b2de3afddbd95") != fp
    assert stage_fingerprint(params, base, "e07b2de3afddbd95") != stage_fingerprint(params, base, "48d9fab9e760b2d6")
