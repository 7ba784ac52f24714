"""Data-parallel scaling of a training stage: steps/s with 1 process and with N Ray Train workers.

Runs the real ``vae`` stage of params.yaml's profile (``run_stage(..., workers=N)``, the code path
of ``gnvc stage vae --workers N``) on synthetic clips, at the same *global* batch for every
worker count, and reads each run's per-step times from its ``metrics.tsv`` (rank 0's clock since
``fit`` started). The steady-state time per step skips the first ``--warmup`` steps (Ray start,
process-group set-up, first-step allocations); the start-up is reported separately.

    python bench/train_scaling.py [--steps 30] [--warmup 5] [--workers 1,2] [--json bench/results/train_scaling.json]

Ray must only talk to loopback here: when this process is not in a loopback-only network
namespace it re-executes itself in one (``flows.netns``, root needed). Each worker gets
``--threads`` torch threads (default 1, as the releases train: on a loaded 2-core machine two
threads per process oversubscribe the cores and a step took 130 s instead of a few). On a machine
shared with other jobs the numbers move with the load: the load average before and after each run
is recorded next to its timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # flows/ (the network namespace helper) lives at the repository root


def _ensure_isolated() -> None:
    from flows.netns import can_isolate, only_loopback

    if only_loopback():
        return
    if not can_isolate():
        sys.exit("this benchmark starts Ray: run it as root (a loopback-only network namespace) or inside one")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    os.execvp(sys.executable, [sys.executable, "-m", "flows.netns", sys.executable, *sys.argv])


def _step_times(log: Path) -> list[tuple[int, float]]:
    lines = (log / "metrics.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    s, t = head.index("step"), head.index("seconds")
    return [(int(r.split("\t")[s]), float(r.split("\t")[t])) for r in lines[1:]]


def run_one(base: dict[str, Any], tmp: Path, workers: int, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    import ray

    from gnvc.stages.runner import run_stage

    tag = f"w{workers}"
    params = json.loads(json.dumps(base))
    params["vae"].update(
        run_dir=str(tmp / tag / "runs"), log_dir=str(tmp / tag / "log"), output=str(tmp / tag / "out"),
    )  # fmt: skip
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if workers == 1:
        import torch

        torch.set_num_threads(threads)
        run_stage("vae", params, metrics_dir=None)
    else:
        if not ray.is_initialized():
            cpus = max(os.cpu_count() or 1, workers * threads)
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, _temp_dir=str(tmp / "ray"))
        run_stage(
            "vae", params, metrics_dir=None, workers=workers, cpus_per_worker=threads,
            ray_storage=str(tmp / "ray_storage"),
        )  # fmt: skip
    wall = time.perf_counter() - t0
    times = dict(_step_times(tmp / tag / "log"))
    per_step = (times[steps] - times[warmup]) / (steps - warmup)
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "s_per_step": round(per_step, 4),
        "steps_per_s": round(1 / per_step, 3),
        "startup_s": round(wall - (times[steps] - times[warmup]), 1),
        "wall_s": round(wall, 1),
        "load_avg_before": round(load0, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batch", type=int, default=4, help="global batch (clips per step, every worker count)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (and of the single process)")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    _ensure_isolated()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from gnvc.data.prepare import prepare_dataset
    from gnvc.stages.runner import load_params

    tmp = Path(tempfile.mkdtemp(prefix="gnvc-scaling-"))
    prepare_dataset(
        {"out_dir": str(tmp / "clips"), "sources": ["synthetic"], "frames": 5, "clips_per_shard": 8,
         "train": {"size": [32, 32], "synthetic_clips": 16}, "val": {"size": [32, 32], "synthetic_clips": 1}},
        progress=False,
    )  # fmt: skip
    params = load_params(a.params)
    params["vae"].update(
        steps=a.steps, image_steps=0, batch_size=a.batch, log_every=1, checkpoint_every=0, progress=False,
        clips_manifest=str(tmp / "clips" / "manifest.json"), device="cpu", stats_batches=1,
    )  # fmt: skip
    params["vae"].pop("export_dir", None)
    results = [run_one(params, tmp, int(w), a.steps, a.warmup, a.threads) for w in a.workers.split(",")]
    base = next((r for r in results if r["workers"] == 1), None)
    for r in results:
        if base is not None:
            r["speedup"] = round(base["s_per_step"] / r["s_per_step"], 3)
            r["efficiency"] = round(r["speedup"] / r["workers"], 3)
        print(json.dumps(r))
    out = {
        "what": f"vae stage, profile {params.get('profile')}, global batch {a.batch} clips 5x32², "
        f"{a.steps} steps ({a.warmup} warm-up), {a.threads} torch thread(s) per worker",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
    }
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
