"""Codec speed per stage: VAE encode, latent analysis, entropy encode/decode, synthesis, refinement,
VAE decode, and overall fps, at 256×256 × 17 frames (one group), on the CPU and on CUDA if present.

    python bench/codec_speed.py [--weights DIR] [--profile tiny] [--repeats 3] [--json bench/results/codec_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from skimage import data as skdata
from skimage.transform import resize

from gnvc.codec.latent_codec import CompressedLatents
from gnvc.codec.video_codec import frames_to_tensor
from gnvc.models.model_dir import GnvcModel

STAGES = ["vae_encode", "analysis", "entropy_encode", "entropy_decode", "synthesis", "refine", "vae_decode"]


def panning_clip(frames: int, size: int) -> np.ndarray:
    """A real photograph (scikit-image's astronaut) panned diagonally: natural texture and motion."""
    img = (resize(skdata.astronaut(), (size * 2, size * 2), anti_aliasing=True) * 255).astype(np.uint8)
    return np.stack([img[3 * t : 3 * t + size, 2 * t : 2 * t + size] for t in range(frames)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run_once(model: GnvcModel, clip: np.ndarray, device: torch.device, quality: int) -> tuple[dict[str, float], int]:
    t: dict[str, float] = {}
    x = frames_to_tensor(clip).to(device)
    sync(device)
    t0 = time.perf_counter()
    latents = model.vae.encode(x)
    sync(device)
    t["vae_encode"] = time.perf_counter() - t0
    enc_t: dict[str, float] = {}
    compressed, _, _ = model.codec.compress(latents, quality, timings=enc_t)
    t["analysis"] = enc_t["analysis"]
    t["entropy_encode"] = enc_t["entropy_encode"]
    dec_t: dict[str, float] = {}
    received = CompressedLatents(compressed.quality, compressed.size, compressed.frames)
    latents_hat, context = model.codec.decompress(received, timings=dec_t)
    sync(device)
    t["entropy_decode"] = dec_t["entropy_decode"]
    t["synthesis"] = dec_t["synthesis"]
    t0 = time.perf_counter()
    if model.refiner is not None:
        coding = model.coding
        latents_hat = model.refiner.refine(latents_hat, context, t_n=coding["t_n"], steps=coding["steps"], seed=0)
    sync(device)
    t["refine"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.vae.decode(latents_hat)
    sync(device)
    t["vae_decode"] = time.perf_counter() - t0
    return t, compressed.num_bytes


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
        med = {s: float(np.median([r[0][s] for r in runs])) for s in STAGES}
        total = sum(med.values())
        nbytes = runs[0][1]
        results.append(
            {
                "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
                "stages_s": med,
                "encode_s": med["vae_encode"] + med["analysis"] + med["entropy_encode"],
                "decode_s": med["entropy_decode"] + med["synthesis"] + med["refine"] + med["vae_decode"],
                "total_s": total,
                "fps_encode": args.frames / (med["vae_encode"] + med["analysis"] + med["entropy_encode"]),
                "fps_decode": args.frames
                / (med["entropy_decode"] + med["synthesis"] + med["refine"] + med["vae_decode"]),
                "latent_bytes": nbytes,
                "bpp_latents": 8 * nbytes / (args.frames * args.size * args.size),
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
