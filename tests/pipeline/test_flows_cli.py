"""``python -m flows.pipeline|latents|evaluate`` with bad arguments: one ``error:`` line, exit 2, fast.

Issue 10: ``--stages prepar`` used to start Prefect and Ray and die 15 s later with a 58-line
traceback. Every case here runs the documented command in a real subprocess (no Ray, no Prefect
server: that is the point) and checks the whole contract: exit status 2, nothing on stdout,
exactly one line on stderr that starts with ``error:`` and names the problem, within a time bound
under a bound (1 s, or on a loaded machine the time this machine takes just to import Prefect) —
and, from Python's own import log (``-X importtime``), that Prefect, Ray and torch were never imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from .conftest import REPO

# A run that got past validation would import Prefect (~2 s) and start a server and Ray (>10 s).
TIME_BOUND_S = 1.0
HEAVY = ("prefect", "prefect_ray", "ray", "torch")

CASES = [
    ("pipeline", ["--stages", "prepar"], "unknown stage 'prepar' (did you mean 'prepare'?)"),
    ("pipeline", ["--stages", "vae,stage3"], "unknown stage 'stage3' (did you mean 'stage2'?)"),
    ("pipeline", ["--stages", ""], "empty stage name"),
    ("pipeline", ["--stages", "prepare,,latents"], "empty stage name"),
    ("pipeline", ["--stages", "all,prepare"], "'all' cannot be combined"),
    ("pipeline", ["--task-gpus", "-1"], "--task-gpus: '-1' must be ≥ 0"),
    ("pipeline", ["--task-gpus", "1.5"], "Ray takes fractions only below 1"),
    ("pipeline", ["--task-cpus", "0"], "--task-cpus: '0' must be > 0"),
    ("pipeline", ["--task-cpus", "nan"], "'nan' is not a finite number"),
    ("pipeline", ["--train-gpus", "inf"], "'inf' is not a finite number"),
    ("pipeline", ["--num-cpus", "0"], "--num-cpus: '0' must be ≥ 1"),
    ("pipeline", ["--num-cpus", "two"], "'two' is not an integer"),
    ("pipeline", ["--threads-per-task", "0"], "--threads-per-task: '0' must be ≥ 1"),
    ("pipeline", ["--resource-wait", "-5"], "--resource-wait: '-5' must be ≥ 0"),
    ("pipeline", ["--num-cpus", "2", "--task-cpus", "3"], "--task-cpus 3 > --num-cpus 2: no task could ever start"),
    ("pipeline", ["--stages", "vae", "--num-gpus", "0", "--train-gpus", "1"], "--train-gpus 1 > --num-gpus 0"),
    ("pipeline", ["--ray-address", "http://head:8265"], "--ray-address 'http://head:8265': expected local, auto"),
    ("pipeline", ["--ray-address", "auto", "--num-cpus", "2"], "--num-cpus/--num-gpus size a local Ray"),
    ("pipeline", ["--ray-address", "auto", "--ray-working-dir", "/nonexistent/gnvc"], "not a directory"),
    ("pipeline", ["--params", "no-such-params.yaml"], "no-such-params.yaml: parameter file not found"),
    ("pipeline", ["--set", "evaluate.max_clips"], "--set expects KEY=VALUE"),
    ("pipeline", ["--store", "http://example.com/bucket"], "unsupported URL"),
    ("pipeline", ["--store", "s3:///prefix"], "no bucket name"),
    ("pipeline", ["--bogus"], "unrecognized arguments: --bogus"),
    ("latents", ["--stages", "latents"], "unrecognized arguments: --stages latents"),
    ("latents", ["--task-gpus", "2.5"], "Ray takes fractions only below 1"),
    ("evaluate", ["--train-gpus", "1"], "unrecognized arguments: --train-gpus 1"),
    ("evaluate", ["--task-cpus", "-2"], "--task-cpus: '-2' must be > 0"),
]


def _run(flow: str, args: list[str], *py_flags: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *py_flags, "-m", f"flows.{flow}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def time_bound() -> float:
    """1 s, or what importing Prefect alone takes on this machine right now (when it is loaded)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import prefect"], check=True, timeout=120)
    return max(TIME_BOUND_S, time.perf_counter() - t0)


@pytest.mark.parametrize(("flow", "args", "message"), CASES, ids=[f"{f}:{' '.join(a)}" for f, a, _ in CASES])
def test_a_bad_argument_is_one_error_line_and_exit_2_at_once(
    flow: str, args: list[str], message: str, time_bound: float
) -> None:
    proc, wall = _run(flow, args, "-X", "importtime")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout == ""
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "gnvc.stages" in imported  # the import log is real
    assert not {m for m in imported if m.split(".")[0] in HEAVY}, "validation must not import Prefect, Ray or torch"
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert message in lines[0]
    assert wall < time_bound, f"{wall:.2f} s ≥ {time_bound:.2f} s: validation must not wait for Prefect or Ray"


def test_each_module_has_its_own_command_line() -> None:
    helps = {f: _run(f, ["--help"])[0] for f in ("pipeline", "latents", "evaluate")}
    assert all(p.returncode == 0 for p in helps.values())
    assert helps["pipeline"].stdout.startswith("usage: python -m flows.pipeline")
    assert "--stages" in helps["pipeline"].stdout and "--train-gpus" in helps["pipeline"].stdout
    assert helps["latents"].stdout.startswith("usage: python -m flows.latents")
    assert "--stages" not in helps["latents"].stdout and "--publish" not in helps["latents"].stdout
    assert helps["evaluate"].stdout.startswith("usage: python -m flows.evaluate")
    assert "--publish" in helps["evaluate"].stdout and "--stages" not in helps["evaluate"].stdout


def test_stage_lists_follow_the_pipeline_order() -> None:
    from flows.cli import UsageError, parse_stages
    from gnvc.stages import STAGES

    assert parse_stages("all") == list(STAGES)
    assert parse_stages(" evaluate , prepare ") == ["prepare", "evaluate"]
    with pytest.raises(UsageError, match="did you mean 'latents'"):
        parse_stages("latent")
