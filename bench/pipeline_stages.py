"""Wall time of each stage of the tiny pipeline under ``dvc repro``, and of the no-op second run.

    python bench/pipeline_stages.py [--until evaluate] [--set KEY=VALUE ...] [--json bench/results/pipeline_stages.json]

Copies the pipeline's files (dvc.yaml, params.yaml, the gnvc sources) into a fresh git + DVC
repository in a temp dir (``--keep DIR`` to choose and keep it), runs ``dvc repro UNTIL`` and reads
each stage's wall time from ``reports/stages/<stage>.json`` (written by ``gnvc stage``), then runs
``dvc repro UNTIL`` again and checks that nothing ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pipeline_common import REPO, machine, print_table, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--until", default="evaluate", help="the dvc.yaml stage to reproduce up to")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it")
    ap.add_argument("--json", default=str(REPO / "bench/results/pipeline_stages.json"))
    a = ap.parse_args()

    from gnvc.cli.stage import apply_overrides

    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="gnvc-bench-stages-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / "gnvc", work / "gnvc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    dirs_exist_ok=True)  # fmt: skip
    params = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), tuple(a.overrides))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    if not (work / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    if not (work / ".dvc").exists():
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, check=True, env=env)

    def repro() -> tuple[float, list[str], str]:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "dvc", "repro", a.until], cwd=work, env=env,
                           capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - t0
        out = p.stdout + p.stderr
        if p.returncode != 0:
            sys.exit(f"dvc repro failed after {wall:.0f} s:\n{out[-4000:]}")
        return wall, [ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage")], out

    first, ran, _ = repro()
    second, ran_again, _ = repro()
    stages = []
    for name in ran:
        m = json.loads((work / "reports/stages" / f"{name}.json").read_text())
        stages.append({"stage": name, "wall_s": m["wall_s"]})
    rows = [[s["stage"], s["wall_s"]] for s in stages]
    rows += [["dvc repro (first, total)", first], ["dvc repro (second)", second]]
    print_table(f"tiny pipeline up to {a.until} ({work})", ["stage", "wall s"], rows)
    if ran_again:
        print(f"WARNING: the second dvc repro ran {ran_again}")
    write_json(a.json, {"until": a.until, "overrides": a.overrides, "machine": machine(), "stages": stages,
                        "first_repro_s": first, "second_repro_s": second, "second_ran": ran_again})  # fmt: skip
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
