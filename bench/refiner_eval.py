"""Refinement vs no refinement at the same bitstreams: LPIPS, DISTS and PSNR on held-out clips.

A thin front end over the evaluation stage's own code (no second implementation): the held-out
clips come from :func:`gnvc.stages.evaluate.held_out_videos`, gnvc runs through
:func:`gnvc.evaluation.evaluate.evaluate_videos` with refinement on and off (``gnvc`` and
``gnvc-noref``: one encode per clip and quality, two decodes of the same bytes), and the summary is
:func:`gnvc.stages.evaluate.refinement_effect`. Prints a per-quality table and writes JSON.

    python bench/refiner_eval.py --weights models/tiny --clips data/clips/manifest.json \
        --out reports/bench/refiner_eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gnvc.evaluation.evaluate import evaluate_videos
from gnvc.evaluation.methods import build_methods
from gnvc.stages.evaluate import held_out_videos, refinement_effect

METRICS = ("lpips_alex", "dists", "psnr_rgb")


def per_quality(report: dict) -> list[dict]:
    """One row per quality label: mean bpp and each metric with (``ref``) and without (``l0``) refinement."""
    rows: dict[str, dict[str, list[float]]] = {}
    for per_method in report["points"].values():
        for method, tag in (("gnvc", "ref"), ("gnvc-noref", "l0")):
            for p in per_method.get(method, []):
                acc = rows.setdefault(p["label"], {})
                if tag == "ref":  # the same bytes in both methods
                    acc.setdefault("bpp", []).append(p["bpp"])
                for m in METRICS:
                    acc.setdefault(f"{m}_{tag}", []).append(p["mean"][m])
    return [{"quality": label, **{k: float(np.mean(v)) for k, v in acc.items()}} for label, acc in sorted(rows.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="models/tiny", help="model directory")
    ap.add_argument("--clips", default="data/clips/manifest.json", help="clip manifest")
    ap.add_argument("--split", default="val")
    ap.add_argument("--count", type=int, default=8, help="held-out clips")
    ap.add_argument("--qualities", default="0,2,5", help="comma-separated quality indices")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="reports/bench/refiner_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    videos = held_out_videos(args.clips, args.split, args.count)
    methods = build_methods(
        weights=args.weights, qualities=[int(q) for q in args.qualities.split(",")], refinement="both"
    )
    report = evaluate_videos(videos, methods, metrics=list(METRICS), visuals=False)
    rows = per_quality(report)
    print(f"{'q':>3} {'bpp':>7} | {'LPIPS L=0':>9} {'ref':>7} | {'DISTS L=0':>9} {'ref':>7} | ", end="")
    print(f"{'PSNR L=0':>8} {'ref':>6}")
    for r in rows:
        print(
            f"{r['quality']:>3} {r['bpp']:7.4f} | {r['lpips_alex_l0']:9.4f} {r['lpips_alex_ref']:7.4f} | "
            f"{r['dists_l0']:9.4f} {r['dists_ref']:7.4f} | {r['psnr_rgb_l0']:8.2f} {r['psnr_rgb_ref']:6.2f}"
        )
    effect = refinement_effect(report)
    for m in ("lpips_alex", "dists"):
        e = effect[m]
        print(f"{m}: refined {e['refined']:.4f} vs {e['unrefined']:.4f}, wins {e['refinement_wins']}/{effect['pairs']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"weights": args.weights, "clips": len(videos), "seconds": report["wall_seconds"], "rows": rows}
    out.write_text(json.dumps({**summary, "effect": effect}, indent=2) + "\n")


if __name__ == "__main__":
    main()
