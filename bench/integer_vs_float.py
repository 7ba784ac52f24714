"""What the exact integer decoding loop costs: BD-rate of integer vs float decoding, same model, same clips.

*Float* is the v1-style codec: entropy parameters, ŷ, synthesis and temporal context in float32
(decodable only on the machine that encoded). *Integer* is the shipped v2 loop. Both entropy-code
the same analysis output with the same CDF tables; rate is the real bytes of the z and y streams,
distortion the PSNR of the decoded latents (normalised latent space, peak 1) and of the VAE-decoded
pixels. The BD-rate (``bjontegaard``, pchip) of integer against float is the price of
cross-machine determinism; the target is ≤ 1 %.

    python bench/integer_vs_float.py --weights models/tiny [--clips 4] [--json bench/results/integer_vs_float.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from gnvc.models.model_dir import GnvcModel


@torch.no_grad()
def float_code(codec, latents: torch.Tensor, quality: int) -> tuple[torch.Tensor, int]:
    """The float32 (v1) loop: returns decoded latents and the bytes of every z and y stream."""
    gain = codec.gain(quality)
    size = tuple(latents.shape[-2:])
    out, nbytes, ctx = [], 0, None
    for t in range(latents.shape[2]):
        l_t = latents[:, :, t]
        ent = codec.intra_entropy if ctx is None else codec.inter_entropy
        y = codec.intra_analysis(l_t) if ctx is None else codec.inter_analysis(torch.cat([l_t, ctx], 1))
        z = ent.h_a(y)
        z_str = ent.entropy_bottleneck.compress(z)
        z_hat = ent.entropy_bottleneck.decompress(z_str, z.shape[-2:])
        mu, scale = ent._gained_params(z_hat, y.shape[-2:], gain, None if ctx is None else codec.context_to_y(ctx))
        idx = ent.gaussian_conditional.build_indexes(scale)
        y_str = ent.gaussian_conditional.compress(y * gain, idx, means=mu)
        y_hat = ent.gaussian_conditional.decompress(y_str, idx, means=mu) / gain
        l_hat = codec.intra_synthesis(y_hat, size) if ctx is None else codec.inter_synthesis(y_hat, size, ctx)
        ctx = codec.context_extractor(l_hat)
        out.append(l_hat)
        nbytes += len(z_str[0]) + len(y_str[0])
    return torch.stack(out, 2), nbytes


@torch.no_grad()
def integer_code(codec, latents: torch.Tensor, quality: int) -> tuple[torch.Tensor, int]:
    data, l_hat, _ = codec.compress(latents, quality)
    return l_hat, data.num_bytes


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return 10 * np.log10(peak**2 / max(mse, 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--clips-manifest", type=Path, default=Path("data/clips/manifest.json"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--json", type=Path, default=Path("bench/results/integer_vs_float.json"))
    args = ap.parse_args()
    from bjontegaard import bd_rate

    from gnvc.stages.evaluate import held_out_videos
    from gnvc.videocodec.frames import frames_to_tensor

    model = GnvcModel.from_pretrained(args.weights).eval()
    codec = model.codec
    videos = held_out_videos(args.clips_manifest, args.split, args.clips)
    rows, per_clip = [], {}
    for name, video in videos.items():
        x = frames_to_tensor(video.frames)
        latents = model.vae.encode(x)
        pixels = ((x + 1) * 127.5).round()
        curves = {"float": [], "integer": []}
        for q in range(codec.num_qualities):
            for kind, fn in (("float", float_code), ("integer", integer_code)):
                l_hat, nbytes = fn(codec, latents, q)
                rec = ((model.vae.decode(l_hat) + 1) * 127.5).round()
                bpp = 8 * nbytes / (video.num_frames * video.width * video.height)
                point = {"clip": name, "kind": kind, "quality": q, "bpp": bpp,
                         "psnr_latent": psnr(l_hat, latents, 1.0), "psnr_rgb": psnr(rec, pixels, 255.0)}  # fmt: skip
                rows.append(point)
                curves[kind].append(point)
        per_clip[name] = {}
        for metric in ("psnr_latent", "psnr_rgb"):
            f, i = curves["float"], curves["integer"]
            try:
                per_clip[name][metric] = float(
                    bd_rate([p["bpp"] for p in f], [p[metric] for p in f], [p["bpp"] for p in i],
                            [p[metric] for p in i], method="pchip", require_matching_points=False)
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - reported: e.g. non-monotonic curves of an untrained model
                per_clip[name][metric] = f"n/a ({e})"
    # Point by point at the same quality index (defined even where an RD curve is not monotonic, as
    # with a model whose quality the VAE caps): rate change and PSNR change of integer vs float.
    by_key = {(p["clip"], p["quality"], p["kind"]): p for p in rows}
    pairs = [(by_key[(c, q, "float")], by_key[(c, q, "integer")]) for (c, q, k) in by_key if k == "float"]
    matched = {
        "rate_change_pct_mean": float(np.mean([100 * (i["bpp"] / f["bpp"] - 1) for f, i in pairs])),
        "rate_change_pct_abs_mean": float(np.mean([abs(100 * (i["bpp"] / f["bpp"] - 1)) for f, i in pairs])),
        "psnr_rgb_change_db_mean": float(np.mean([i["psnr_rgb"] - f["psnr_rgb"] for f, i in pairs])),
        "psnr_latent_change_db_mean": float(np.mean([i["psnr_latent"] - f["psnr_latent"] for f, i in pairs])),
        "points": len(pairs),
    }
    print("same quality index, integer vs float: " + ", ".join(f"{k}={v:.3f}" for k, v in matched.items()))
    mean = {}
    for metric in ("psnr_latent", "psnr_rgb"):
        vals = [v[metric] for v in per_clip.values() if isinstance(v[metric], float)]
        mean[metric] = float(np.mean(vals)) if vals else None
    table = Table(title=f"integer vs float decoding loop, {model.name}, BD-rate (pchip, per clip then mean)")
    for col in ("clip", "BD-rate latent PSNR [%]", "BD-rate RGB PSNR [%]"):
        table.add_column(col)
    for name, v in per_clip.items():
        table.add_row(name, *[f"{v[m]:.3f}" if isinstance(v[m], float) else v[m] for m in ("psnr_latent", "psnr_rgb")])
    table.add_row("mean", *[f"{mean[m]:.3f}" if mean[m] is not None else "n/a" for m in ("psnr_latent", "psnr_rgb")])
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = {"weights": str(args.weights), "profile": model.name, "bd_rate_mean": mean, "per_clip": per_clip,
           "same_quality": matched, "points": rows}  # fmt: skip
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
