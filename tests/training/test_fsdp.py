"""FSDP for the DiT tuned in full: 2 sharded workers train as one process would, and resume exactly.

Real Ray Train (2 CPU workers, gloo), real PyTorch FSDP2 on the tests' tiny Wan DiT, Stage I with
``dit_tuning: full``. The tests marked ``ray`` run only in a loopback-only network namespace
(``tests/pipeline/test_ray_netns.py`` re-runs this file there); the others run anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from gnvc.models.model_dir import GnvcModel
from gnvc.training.common import dit_shards

from .conftest import synthetic_training_data
from .test_distributed import LOSS_RTOL, WEIGHT_ATOL, _logged_steps, _weights, ray_only

STEPS = 6
EVERY = 2


def _stage1(tmp: Path, tag: str, **over: Any) -> dict[str, Any]:
    section = {
        "input": str(tmp / "build/prior"), "output": str(tmp / tag / "out"), "run_dir": str(tmp / tag / "runs"),
        "log_dir": str(tmp / tag / "log"), "latents_manifest": str(tmp / "data/latents/manifest.json"),
        "steps": STEPS, "checkpoint_every": EVERY, "keep_checkpoints": 3, "log_every": 1, "progress": False,
        "batch_size": 4, "lambdas": [0.5, 2.0, 8.0], "codec_mse_weight": 1.0, "dit_tuning": "full",
        "lr": 1e-3, "schedule": "constant", "device": "cpu",
    }  # fmt: skip
    section.update(over)
    return {"profile": str(tmp / "profile.yaml"), "seed": 0, "stage1": section}


@pytest.fixture(scope="module")
def prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny prior model directory and its latents (one process): what Stage I starts from."""
    from gnvc.data.latents import encode_latents
    from gnvc.stages import prior, vae

    tmp = tmp_path_factory.mktemp("fsdp")
    synthetic_training_data(tmp, clips=8, clips_per_shard=4, out="data/clips")
    common = {"progress": False, "checkpoint_every": 0, "device": "cpu"}
    params = {
        "profile": str(tmp / "profile.yaml"), "seed": 0,
        "vae": {**common, "output": str(tmp / "build/vae"), "run_dir": str(tmp / "runs/vae"),
                "log_dir": str(tmp / "log/vae"), "clips_manifest": str(tmp / "data/clips/manifest.json"),
                "steps": 2, "image_steps": 1, "image_batch_size": 2, "batch_size": 2, "frames": 5, "crop": [32, 32],
                "logvar_init": -6.0, "lpips_weight": 0.0, "stats_batches": 1},
        "prior": {**common, "input": str(tmp / "build/vae"), "output": str(tmp / "build/prior"),
                  "run_dir": str(tmp / "runs/prior"), "log_dir": str(tmp / "log/prior"),
                  "latents_manifest": str(tmp / "data/latents/manifest.json"), "steps": 2, "batch_size": 2},
    }  # fmt: skip
    vae.run(params)
    encode_latents(
        {"clips_manifest": str(tmp / "data/clips/manifest.json"), "vae": str(tmp / "build/vae"),
         "out_dir": str(tmp / "data/latents"), "batch_size": 2, "threads": 1},
        profile="tiny", progress=False,
    )  # fmt: skip
    prior.run(params)
    return tmp


def _checkpoint_layout(ckpt: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    with safe_open(str(ckpt / "state.safetensors"), "pt") as f:
        return {k: (str(f.get_slice(k).get_dtype()), tuple(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def _max_float_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference of the trained (floating-point) tensors. The integer CDF tables are left
    out: ``update()`` derives them from the quantiles, and a rounding-level change of a quantile can
    change a table's length by one. The quantiles themselves are solved for at export
    (``fit_quantiles``) where the barely trained density is nearly flat: a rounding-level change of
    the density moves them ≈ 1e-6 of its width (hundreds of units; 1e-4 absolute at the median),
    so they count relative to each channel's width (upper minus lower quantile)."""
    keys = [k for k in a if a[k].is_floating_point() and a[k].numel()]
    assert keys and all(a[k].shape == b[k].shape for k in keys)

    def diff(k: str) -> float:
        d = (a[k].float() - b[k].float()).abs()
        if not k.endswith("quantiles"):
            return float(d.max())
        q = a[k].float()  # (C, 1, 3): lower, median, upper
        return float((d / (q[..., 2:] - q[..., :1]).abs().clamp(min=1.0)).max())

    return max(diff(k) for k in keys)


# ---------------------------------------------------------------------------------- anywhere
def test_only_a_dit_trained_in_full_is_sharded(prior: Path) -> None:
    model = GnvcModel.from_pretrained(prior / "build/prior")
    assert dit_shards({}, model, full=True) == [model.refiner.transformer]
    assert dit_shards({"fsdp": False}, model, full=True) == []
    assert dit_shards({}, model, full=False) == []  # frozen or LoRA: plain data parallelism


def test_one_process_ignores_the_shard_request(prior: Path) -> None:
    from gnvc.stages.runner import run_stage

    result = run_stage("stage1", _stage1(prior, "solo", steps=1, checkpoint_every=0), metrics_dir=None)
    assert result["fsdp"] is False and result["steps"] == 1


# ---------------------------------------------------------------------------------- with Ray
@pytest.fixture(scope="module")
def sharded(ray_cluster: None, prior: Path) -> dict[str, Any]:
    """Stage I, DiT in full, 2 workers × 2 latent clips with the DiT sharded, uninterrupted."""
    from gnvc.stages.runner import run_stage

    return run_stage("stage1", _stage1(prior, "fsdp"), metrics_dir=None, workers=2, ray_storage=str(prior / "ray"))


@pytest.mark.ray
@ray_only
def test_sharded_workers_follow_one_process(prior: Path, sharded: dict[str, Any]) -> None:
    from gnvc.stages.runner import run_stage

    one = run_stage("stage1", _stage1(prior, "one"), metrics_dir=None)
    assert sharded["fsdp"] is True and sharded["workers"] == 2 and one["fsdp"] is False
    assert json.loads((prior / "fsdp/log/summary.json").read_text())["fsdp"] is True
    assert _logged_steps(prior / "fsdp/log") == list(range(1, STEPS + 1))
    # The same loss curve (the DiT's gradients reduce-scattered by FSDP, the codec's all-reduced).
    a = {
        int(h["step"]): h["loss"]
        for h in json.loads((prior / "one/runs/step-0000006/trainer.json").read_text())["history"]
    }  # noqa: E501
    b = {
        int(h["step"]): h["loss"]
        for h in json.loads((prior / "fsdp/runs/step-0000006/trainer.json").read_text())["history"]
    }  # noqa: E501
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    rel = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    print(f"FSDP: max relative loss difference over {STEPS} steps: {rel:.2e}")
    assert rel < LOSS_RTOL
    # The same weights, saved as a plain diffusers DiT (not FSDP's subclass, not shards) …
    wa, wb = _weights(prior / "one/out"), _weights(prior / "fsdp/out")
    assert wa.keys() == wb.keys()
    diff = _max_float_difference(wa, wb)
    print(f"FSDP: max weight difference after {STEPS} steps: {diff:.2e}")
    assert diff < WEIGHT_ATOL
    config = json.loads((prior / "fsdp/out/refiner/transformer/config.json").read_text())
    assert config["_class_name"] == "WanTransformer3DModel"
    # … in which the DiT did train (full tuning), and which loads and runs.
    w0 = _weights(prior / "build/prior")
    dit = [k for k in wb if k.startswith("refiner/transformer/") and "blocks.0.attn1.to_q.weight" in k]
    assert dit and all(not torch.equal(w0[k], wb[k]) for k in dit)
    assert GnvcModel.from_pretrained(prior / "fsdp/out").refiner is not None
    # The checkpoints are the files one process writes: full tensors, same names, same shapes.
    for step in (EVERY, STEPS):
        name = f"step-{step:07d}"
        assert _checkpoint_layout(prior / "fsdp/runs" / name) == _checkpoint_layout(prior / "one/runs" / name)


@pytest.mark.ray
@ray_only
def test_sharded_resume_is_exact_and_crosses_world_sizes(prior: Path, sharded: dict[str, Any]) -> None:
    """Stop a sharded run at step 4 and rerun it: it resumes from its checkpoint (each rank its shard
    of the full tensors) and ends at the uninterrupted run's weights, bit for bit. One process
    resumes the same checkpoint too, and ends where the sharded run does (within float rounding)."""
    from gnvc.stages.runner import run_stage

    half = _stage1(prior, "half", steps=4)
    first = run_stage("stage1", half, metrics_dir=None, workers=2, ray_storage=str(prior / "ray-h"))
    assert first["steps"] == 4 and first["fsdp"] is True
    shutil.copytree(prior / "half", prior / "half-one")
    again = run_stage("stage1", _stage1(prior, "half"), metrics_dir=None, workers=2, ray_storage=str(prior / "ray-h2"))
    assert again["resumed_from"] == 4 and again["steps"] == STEPS
    assert again["weights_hash"] == sharded["weights_hash"]
    assert _logged_steps(prior / "half/log") == list(range(1, STEPS + 1))
    # One process on a copy of the step-4 checkpoint (same section but run_dir/log_dir: same fingerprint).
    solo = run_stage("stage1", _stage1(prior, "half-one", output=str(prior / "half/out")), metrics_dir=None)
    assert solo["resumed_from"] == 4 and solo["fsdp"] is False
    assert _max_float_difference(_weights(prior / "half/out"), _weights(prior / "fsdp/out")) < WEIGHT_ATOL
