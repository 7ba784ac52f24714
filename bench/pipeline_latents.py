"""Latent-encoding throughput (clips/s): in one process, and as the Prefect flow with 1 and 2 Ray workers.

    python bench/pipeline_latents.py [--vae build/tiny/vae] [--json bench/results/pipeline_latents.json]

Data: the default tiny data set (params.yaml's ``data:``: 64 train clips 13×64², 4 val 13×128²),
prepared in a temp dir. VAE: ``--vae`` (a model directory), else the tiny profile's VAE untrained
(the same network, so the same speed). Each Ray run starts its cluster first; throughput is
clips / flow wall time (tasks, scheduling and the manifest included, cluster start excluded).
Runs itself in a loopback-only network namespace (Ray may only use 127.0.0.1 here).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pipeline_common import REPO, isolate_or_reexec, machine, print_table, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--vae", default=None, help="model directory with vae/ (default: untrained tiny)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best is reported")
    ap.add_argument("--json", default=str(REPO / "bench/results/pipeline_latents.json"))
    a = ap.parse_args()
    a.params, a.json = str(Path(a.params).resolve()), str(Path(a.json).resolve())
    a.vae = str(Path(a.vae).resolve()) if a.vae else None
    isolate_or_reexec()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gnvc-prefect-home-"))
    work = Path(tempfile.mkdtemp(prefix="gnvc-bench-latents-"))
    os.chdir(work)  # the flow records reports/stages/latents.json in its working directory

    import ray
    import torch

    from flows.common import RayOptions, prefect_api, ray_task_runner
    from flows.latents import latents_flow
    from gnvc.data.latents import encode_latents
    from gnvc.data.prepare import prepare_dataset
    from gnvc.stages.runner import load_params

    params = load_params(a.params)
    t0 = time.perf_counter()
    prep = prepare_dataset({**params["data"], "out_dir": str(work / "clips")}, progress=False)
    print(f"prepared {prep['clips_train']} + {prep['clips_val']} clips in {time.perf_counter() - t0:.1f} s")
    vae = a.vae
    if vae is None:
        from gnvc.models.model_dir import GnvcModel

        vae = str(work / "model")
        GnvcModel.from_profile(str(params.get("profile", "tiny"))).save_pretrained(vae)
    section = {"clips_manifest": str(work / "clips/manifest.json"), "vae": vae, "batch_size": a.batch_size}
    n_clips = prep["clips_train"] + prep["clips_val"]
    runs: list[dict] = []

    def record(mode: str, walls: list[float], workers: int, encode_s: float) -> None:
        best = min(walls)
        runs.append(
            {
                "mode": mode,
                "workers": workers,
                "walls_s": walls,
                "wall_s": best,
                "clips_per_s": n_clips / best,
                "encode_s": encode_s,
                "load_avg_1m": os.getloadavg()[0],
            }
        )

    for threads in (1, 2):
        torch.set_num_threads(threads)
        walls = []
        for r in range(a.repeats):
            t0 = time.perf_counter()
            m = encode_latents({**section, "out_dir": str(work / f"lat-inproc-{threads}-{r}")}, progress=False)
            walls.append(time.perf_counter() - t0)
        record(f"in-process, {threads} torch thread(s)", walls, 1, m["encode_s"])

    with prefect_api():
        for workers in (1, 2):
            opts = RayOptions(num_cpus=workers, threads_per_task=1)
            runner = ray_task_runner(opts)
            ray.init(address="local", **runner.init_kwargs)
            walls, used = [], 0
            for r in range(a.repeats):
                lat = {**section, "out_dir": str(work / f"lat-{workers}-{r}")}
                t0 = time.perf_counter()
                m = latents_flow.with_options(task_runner=runner)(params={"profile": "tiny", "latents": lat})
                walls.append(time.perf_counter() - t0)
                used = max(used, m["workers"])
            record(f"Prefect flow, {workers} Ray worker(s) × 1 thread", walls, used, m["encode_s"])
            ray.shutdown()

    print_table(
        f"latent encoding of {n_clips} clips (train 13×64², val 13×128²), batch {a.batch_size}, best of {a.repeats}",
        ["mode", "workers used", "wall s", "clips/s", "load (1 min)"],
        [[r["mode"], r["workers"], r["wall_s"], r["clips_per_s"], r["load_avg_1m"]] for r in runs],
    )
    write_json(a.json, {"clips": n_clips, "batch_size": a.batch_size, "vae": vae if a.vae else "untrained tiny",
                        "machine": machine(), "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
