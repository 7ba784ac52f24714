"""Throughput of each quality metric on the CPU (or a given device), at 256×256 and 640×360.

Frames are a pan over a natural image (scikit-image's astronaut, tiled), so E_warp's optical flow
sees real motion; the distorted copy is the same pan with noise. Model loading is timed
separately (``load s``) and excluded from the throughput, which is reported as frames per second
(frame pairs for the temporal metrics).

    .venv/bin/python bench/metrics_speed.py [--frames 8] [--threads 1] [--json bench/results/metrics_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

SIZES = ((256, 256), (640, 360))


def pan_video(width: int, height: int, frames: int, step: int = 3) -> np.ndarray:
    """``frames`` crops of a tiled natural image, moving ``step`` pixels right per frame."""
    from skimage import data

    base = data.astronaut()
    reps = (-(-height // base.shape[0]) + 1, -(-(width + step * frames) // base.shape[1]) + 1, 1)
    big = np.tile(base, reps)
    return np.stack([big[:height, step * t : step * t + width] for t in range(frames)])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8, help="frames per measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch/OpenCV threads (default: library defaults)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--metrics", default=None, help="comma-separated subset (default: all but CLIP-F)")
    ap.add_argument("--clip-weights", default=None, help="local transformers CLIP directory (adds CLIP-F)")
    ap.add_argument("--json", default="bench/results/metrics_speed.json", help="where to write the results")
    args = ap.parse_args(argv)

    import torch

    from gnvc.metrics.compute import METRICS, metric_function, resolve_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
        import cv2

        cv2.setNumThreads(args.threads)
    names = resolve_metrics(args.metrics, args.clip_weights)
    rng = np.random.default_rng(0)
    rows = []
    for width, height in SIZES:
        ref = pan_video(width, height, args.frames)
        dist = np.clip(ref + rng.normal(0, 8, ref.shape), 0, 255).astype(np.uint8)
        for name in names:
            fn = metric_function(name, device=args.device, batch_size=args.frames, clip_path=args.clip_weights)
            t0 = time.perf_counter()
            fn(ref[:2], dist[:2])  # warm-up: loads networks, converts weights on a first run
            load = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn(ref, dist)
            seconds = time.perf_counter() - t0
            units = args.frames - 1 if METRICS[name].temporal else args.frames
            rows.append(
                {
                    "metric": name,
                    "width": width,
                    "height": height,
                    "frames": units,
                    "seconds": seconds,
                    "fps": units / seconds,
                    "load_seconds": load,
                }
            )
    result = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "rows": rows,
    }
    print(
        f"{'metric':<12} {'size':>9} {'fps':>9} {'load s':>7}   (device {args.device}, {result['threads']} thread(s))"
    )
    for r in rows:
        print(f"{r['metric']:<12} {r['width']:>4}x{r['height']:<4} {r['fps']:>9.2f} {r['load_seconds']:>7.2f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
