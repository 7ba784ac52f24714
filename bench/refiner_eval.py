"""Refinement vs no refinement at the same bitstreams: LPIPS, DISTS and PSNR on held-out clips.

Each held-out clip (the ``val`` split of the clip shards) is encoded once per quality index with
``encode_video``; the same bytes are then decoded twice with ``decode_video``: with the header's
refinement (L = steps) and with ``steps=0`` (no refinement). Only the decoder differs, so the rate
is identical and any metric difference is the refiner's. Prints a table and writes JSON.

    python bench/refiner_eval.py --weights models/tiny --clips data/clips/manifest.json \
        --out reports/bench/refiner_eval.json
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from gnvc.codec.video_codec import decode_video, encode_video
from gnvc.data.shards import iter_clip_batches
from gnvc.io.video import Video
from gnvc.metrics.dists_metric import dists_distance
from gnvc.metrics.lpips_metric import lpips_distance
from gnvc.metrics.psnr import psnr_rgb
from gnvc.models.model_dir import GnvcModel


def held_out_clips(manifest: Path, count: int, split: str) -> list[np.ndarray]:
    """The first ``count`` clips of ``split`` in manifest order, as uint8 (T, H, W, 3)."""
    clips = []
    for batch in iter_clip_batches(manifest, 1, 0, shuffle=False, repeat=False, split=split):
        x = ((batch[0].permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        clips.append(x.numpy())
        if len(clips) == count:
            break
    return clips


def measure(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {
        "lpips": float(np.mean(lpips_distance(ref, out, net="alex"))),
        "dists": float(np.mean(dists_distance(ref, out))),
        "psnr": float(np.mean(psnr_rgb(ref, out))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="models/tiny", help="model directory")
    ap.add_argument("--clips", default="data/clips/manifest.json", help="clip manifest")
    ap.add_argument("--split", default="val")
    ap.add_argument("--count", type=int, default=8, help="held-out clips")
    ap.add_argument("--qualities", default="0,2,5", help="comma-separated quality indices")
    ap.add_argument("--steps", type=int, default=None, help="refinement steps (default: the header's L)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed written in the headers")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="reports/bench/refiner_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = GnvcModel.from_pretrained(args.weights)
    clips = held_out_clips(Path(args.clips), args.count, args.split)
    qualities = [int(q) for q in args.qualities.split(",")]
    rows = []
    t0 = time.perf_counter()
    for q in qualities:
        acc: dict[str, list[float]] = {}
        bpp = []
        for frames in clips:
            video = Video(frames, Fraction(25))
            enc = encode_video(model, video, q, seed=args.seed)
            bpp.append(enc.bpp)
            refined = decode_video(model, enc.data, steps=args.steps).frames
            plain = decode_video(model, enc.data, steps=0).frames
            for tag, out in (("refined", refined), ("plain", plain)):
                for k, v in measure(frames, out).items():
                    acc.setdefault(f"{k}_{tag}", []).append(v)
        row = {"quality": q, "bpp": float(np.mean(bpp)), **{k: float(np.mean(v)) for k, v in acc.items()}}
        row["lpips_wins"] = int(sum(r < p for r, p in zip(acc["lpips_refined"], acc["lpips_plain"], strict=True)))
        row["dists_wins"] = int(sum(r < p for r, p in zip(acc["dists_refined"], acc["dists_plain"], strict=True)))
        rows.append(row)
    header = f"{'q':>2} {'bpp':>7} | {'LPIPS L=0':>9} {'LPIPS ref':>9} | {'DISTS L=0':>9} {'DISTS ref':>9} | "
    header += f"{'PSNR L=0':>8} {'PSNR ref':>8} | wins (LPIPS, DISTS)"
    print(header)
    for r in rows:
        print(
            f"{r['quality']:>2} {r['bpp']:7.4f} | {r['lpips_plain']:9.4f} {r['lpips_refined']:9.4f} | "
            f"{r['dists_plain']:9.4f} {r['dists_refined']:9.4f} | {r['psnr_plain']:8.2f} {r['psnr_refined']:8.2f} | "
            f"{r['lpips_wins']}/{len(clips)}, {r['dists_wins']}/{len(clips)}"
        )
    summary = {
        "weights": args.weights,
        "weights_hash": model.weights_hash.hex(),
        "clips": len(clips),
        "clip_shape": list(clips[0].shape),
        "split": args.split,
        "steps": args.steps if args.steps is not None else "header",
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
