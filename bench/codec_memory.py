"""Peak memory of ``gnvc encode`` and ``gnvc decode`` against video length: streaming keeps it flat.

Each run is a fresh process (the CLI, as a user runs it) whose peak RSS is read from
``getrusage``; the input is a ``.y4m`` of a panning photograph at 256×256, written frame by frame.
The target: the 321-frame peak is at most 1.3× the 17-frame peak, for encode and for decode.

    python bench/codec_memory.py [--weights DIR] [--frames 17,161,321] [--size 256] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from skimage import data as skdata
from skimage.transform import resize

_RUN = (
    "import resource, sys\n"
    "from gnvc.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def write_clip(path: Path, frames: int, size: int) -> None:
    """A panning, zooming photograph, streamed to ``path`` one frame at a time."""
    from gnvc.io.stream import FrameWriter

    img = (resize(skdata.astronaut(), (3 * size, 3 * size), anti_aliasing=True) * 255).astype(np.uint8)
    span = 2 * size
    with FrameWriter(path, width=size, height=size, fps=Fraction(25)) as w:
        for t in range(frames):
            k = int(span * (0.5 - 0.5 * np.cos(2 * np.pi * t / 160)))
            w.write(np.ascontiguousarray(img[k // 2 : k // 2 + size, k : k + size]))


def peak_kb(args: list[str]) -> int:
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK_KB")]
    if proc.returncode or not lines:
        raise RuntimeError(f"gnvc {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return int(lines[-1].split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="model directory (default: an untrained tiny)")
    ap.add_argument("--frames", default="17,161,321")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=None, help="refinement steps for decode (default: the header's)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/codec_memory.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gnvc-mem-") as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            from gnvc.models.model_dir import GnvcModel

            weights = tmp / "model"
            GnvcModel.from_profile("tiny", seed=0).save_pretrained(weights)
        for n in (int(f) for f in args.frames.split(",")):
            clip, stream, out = tmp / f"in{n}.y4m", tmp / f"s{n}.gnvc", tmp / f"out{n}.y4m"
            write_clip(clip, n, args.size)
            enc = peak_kb(["encode", str(clip), "-o", str(stream), "--weights", str(weights)])
            dec_args = ["decode", str(stream), "-o", str(out), "--weights", str(weights)]
            dec = peak_kb(dec_args + (["--steps", str(args.steps)] if args.steps is not None else []))
            rows.append({"frames": n, "encode_peak_mb": enc / 1024, "decode_peak_mb": dec / 1024})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["encode_ratio"] = r["encode_peak_mb"] / base["encode_peak_mb"]
        r["decode_ratio"] = r["decode_peak_mb"] / base["decode_peak_mb"]
    table = Table(title=f"gnvc peak RSS, {args.size}×{args.size} (ratio to {base['frames']} frames; target ≤ 1.3)")
    for col in ("frames", "encode MB", "ratio", "decode MB", "ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["frames"]), f"{r['encode_peak_mb']:.0f}", f"{r['encode_ratio']:.2f}",
            f"{r['decode_peak_mb']:.0f}", f"{r['decode_ratio']:.2f}",
        )  # fmt: skip
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"size": args.size, "steps": args.steps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
