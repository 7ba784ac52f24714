"""Prefect + Ray overhead per task: N trivial tasks through the flows' Ray task runner, against
plain Ray tasks and direct calls on the same machine.

    python bench/pipeline_flow_overhead.py [--tasks 32] [--workers 2] [--json bench/results/pipeline_flow_overhead.json]

Runs itself in a loopback-only network namespace (Ray may only use 127.0.0.1 here); a Prefect
server is started on 127.0.0.1 for the run (one server for all Ray workers, as the flows do).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pipeline_common import REPO, isolate_or_reexec, machine, print_table, write_json  # noqa: E402


def noop(x: int) -> int:
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=str(REPO / "bench/results/pipeline_flow_overhead.json"))
    a = ap.parse_args()
    isolate_or_reexec()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gnvc-prefect-home-"))

    import ray
    from prefect import flow

    from flows.common import RayOptions, prefect_api, ray_map, ray_task_runner
    from flows.tasks import call_task

    results: dict[str, float] = {}
    t0 = time.perf_counter()
    [noop(i) for i in range(a.tasks)]
    results["direct_per_task_s"] = (time.perf_counter() - t0) / a.tasks

    with prefect_api():
        opts = RayOptions(num_cpus=a.workers)
        runner = ray_task_runner(opts)
        t0 = time.perf_counter()
        ray.init(address="local", **runner.init_kwargs)
        results["ray_init_s"] = time.perf_counter() - t0

        remote = ray.remote(num_cpus=1)(noop)
        ray.get([remote.remote(i) for i in range(a.workers)])  # warm the workers
        t0 = time.perf_counter()
        ray.get([remote.remote(i) for i in range(a.tasks)])
        results["ray_per_task_s"] = (time.perf_counter() - t0) / a.tasks

        timings: dict[str, float] = {}

        @flow(name="overhead")
        def overhead(n: int) -> list[int]:
            t = time.perf_counter()
            ray_map(call_task, noop, range(a.workers))  # warm: Prefect imports in each worker
            timings["warm_s"] = time.perf_counter() - t
            t = time.perf_counter()
            out = ray_map(call_task, noop, range(n))
            timings["fanout_s"] = time.perf_counter() - t
            return out

        t0 = time.perf_counter()
        out = overhead.with_options(task_runner=ray_task_runner(opts))(a.tasks)
        results["flow_total_s"] = time.perf_counter() - t0
        assert out == list(range(a.tasks))
        results["flow_warmup_s"] = timings["warm_s"]
        results["prefect_ray_per_task_s"] = timings["fanout_s"] / a.tasks
        results["prefect_overhead_per_task_s"] = results["prefect_ray_per_task_s"] - results["ray_per_task_s"]
        ray.shutdown()

    rows = [
        ["direct call", results["direct_per_task_s"] * 1e3],
        ["plain Ray task", results["ray_per_task_s"] * 1e3],
        ["Prefect task on Ray (flows' runner)", results["prefect_ray_per_task_s"] * 1e3],
        ["Prefect's share", results["prefect_overhead_per_task_s"] * 1e3],
    ]
    print_table(f"{a.tasks} no-op tasks, {a.workers} Ray workers: ms per task", ["path", "ms/task"], rows)
    print(f"ray.init {results['ray_init_s']:.1f} s; flow end to end {results['flow_total_s']:.1f} s "
          f"(first tasks in fresh workers {results['flow_warmup_s']:.1f} s)")  # fmt: skip
    write_json(a.json, {"tasks": a.tasks, "workers": a.workers, "machine": machine(), **results})


if __name__ == "__main__":
    main()
