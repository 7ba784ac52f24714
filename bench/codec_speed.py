"""Codec speed per stage of the real streaming encoder and decoder: VAE encode, latent coding (analysis
+ entropy encoding + the integer loop), latent decoding (entropy decoding + the integer loop),
refinement, VAE decode, and overall fps, at 256×256 × 17 frames, on the CPU and on CUDA if present.

    python bench/codec_speed.py [--weights DIR] [--profile tiny] [--repeats 3] [--json bench/results/codec_speed.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from skimage import data as skdata
from skimage.transform import resize

from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_stream, encode_video

STAGES = ["vae_encode", "latent_codec", "latent_decode", "refine", "vae_decode"]


def panning_clip(frames: int, size: int) -> np.ndarray:
    """A real photograph (scikit-image's astronaut) panned diagonally: natural texture and motion."""
    img = (resize(skdata.astronaut(), (size * 2, size * 2), anti_aliasing=True) * 255).astype(np.uint8)
    return np.stack([img[3 * t : 3 * t + size, 2 * t : 2 * t + size] for t in range(frames)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_once(model: GnvcModel, clip: np.ndarray, device: torch.device, quality: int) -> tuple[dict[str, float], int]:
    """One encode and one decode through the real streaming path; per-stage seconds and stream bytes."""
    video = Video(clip, 25)
    sync(device)
    enc = encode_video(model, video, quality)
    sync(device)
    frames: list[np.ndarray] = []
    dec = decode_stream(model, io.BytesIO(enc.data), frames.append)
    sync(device)
    t = {k: enc.timings.get(k, 0.0) for k in ("vae_encode", "latent_codec")}
    t.update({k: dec.timings.get(k, 0.0) for k in ("latent_decode", "refine", "vae_decode")})
    t["encode_total"], t["decode_total"] = enc.seconds, dec.seconds
    return t, enc.num_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="model directory (default: untrained --profile)")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--quality", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=Path("bench/results/codec_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = GnvcModel.from_pretrained(args.weights) if args.weights else GnvcModel.from_profile(args.profile)
    clip = panning_clip(args.frames, args.size)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        model.to(device)
        run_once(model, clip[:5], device, args.quality)  # warm-up
        runs = [run_once(model, clip, device, args.quality) for _ in range(args.repeats)]
        med = {s: float(np.median([r[0][s] for r in runs])) for s in [*STAGES, "encode_total", "decode_total"]}
        nbytes = runs[0][1]
        results.append(
            {
                "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
                "stages_s": {s: med[s] for s in STAGES},
                "encode_s": med["encode_total"],
                "decode_s": med["decode_total"],
                "fps_encode": args.frames / med["encode_total"],
                "fps_decode": args.frames / med["decode_total"],
                "stream_bytes": nbytes,
                "bpp": 8 * nbytes / (args.frames * args.size * args.size),
            }
        )
        model.to("cpu")

    table = Table(title=f"gnvc codec speed, profile {model.name}, {args.frames}×{args.size}², median of {args.repeats}")
    table.add_column("stage")
    for r in results:
        table.add_column(f"{r['device']} [s]", justify="right")
    for s in STAGES:
        table.add_row(s, *[f"{r['stages_s'][s]:.3f}" for r in results])
    table.add_row("encode fps", *[f"{r['fps_encode']:.2f}" for r in results])
    table.add_row("decode fps", *[f"{r['fps_decode']:.2f}" for r in results])
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "profile": model.name,
        "frames": args.frames,
        "size": args.size,
        "quality": args.quality,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
