"""The emulated-machine table: every setup × stream, decoded or not, latents equal, max pixel difference.

The same streams and setups as tests/codec/test_machines.py (golden streams under tests/data/golden
and fresh tiny-model streams at small and odd sizes, qualities 0/3/5), printed as a table and
written to JSON.

    python bench/emulated_machines.py [--json bench/results/emulated_machines.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnvc.models.model_dir import GnvcModel  # noqa: E402
from tests.codec.machines import SETUPS, build_jobs, compare, decode_in_setup  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("bench/results/emulated_machines.json"))
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="gnvc-machines-") as tmp:
        tmp = Path(tmp)
        model = GnvcModel.from_profile("tiny", seed=0)
        model.save_pretrained(tmp / "model")
        jobs, expected = build_jobs(tmp, model, tmp / "model")
        for setup in SETUPS:
            results[setup] = compare(decode_in_setup(setup, jobs), expected)
            print(f"{setup}: done", flush=True)
    streams = [r["stream"] for r in next(iter(results.values()))]
    table = Table(
        title="emulated machines: latents equal / max |Δpixel| at --steps 0 (streams encoded in the default setup)"
    )
    table.add_column("stream")
    for setup in SETUPS:
        table.add_column(setup, justify="center")
    for i, name in enumerate(streams):
        cells = []
        for setup in SETUPS:
            r = results[setup][i]
            cells.append(
                ("✓" if r["latents_equal"] else ("✗" if r["decoded"] else "error")) + f" {r['max_pixel_diff']}"
            )
        table.add_row(name, *cells)
    Console(width=250).print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
