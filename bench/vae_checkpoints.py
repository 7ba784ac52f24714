"""VAE-only reconstruction of held-out clips for exported training checkpoints (the release's VAE).

Why: the training loss is measured on small random crops of training clips; whether a stretch of
VAE training helps is decided on whole held-out clips. Loads the VAE weights of each exported
checkpoint (``checkpoints/<profile>/vae`` or a copy), optionally inflated in time first (what the
clip phase starts from), and prints PSNR (first frame, other frames, all) and LPIPS-Alex.

It also codes flat patches of 12 saturated hues (HSV, S 0.85, V 0.8) and prints the mean and the
worst RGB error of their centres (on [0, 1]): the base VAE of release 2 turned a green into grey
(error 0.4) while coding greys and oranges to 0.02, which whole-clip PSNR hides.

    python bench/vae_checkpoints.py checkpoints/base/vae inflate:checkpoints/base/vae --clips 6
    python bench/vae_checkpoints.py model:weights/base model:models/base   # fine-tuned decoders
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from gnvc.data.shards import read_clip_shard, read_manifest
from gnvc.metrics.lpips_metric import lpips_model
from gnvc.models.model_dir import GnvcModel
from gnvc.models.vae import VideoVAE

RESULTS = Path(__file__).parent / "results" / "vae_checkpoints.json"


def load_vae(spec: str, profile: str) -> tuple[VideoVAE, int]:
    """``DIR`` (an export or run checkpoint), ``inflate:DIR`` or ``model:DIR`` (a model directory,
    e.g. weights/base: its encoder with its own, possibly fine-tuned, decoder; step -1)."""
    if spec.startswith("model:"):
        return GnvcModel.from_pretrained(spec.removeprefix("model:")).vae.eval(), -1
    inflate = spec.startswith("inflate:")
    ckpt = Path(spec.removeprefix("inflate:"))
    vae = GnvcModel.from_profile(profile, seed=0).vae
    tensors = load_file(str(ckpt / "state.safetensors"))
    state = {k[len("model.vae.") :]: v.float() for k, v in tensors.items() if k.startswith("model.vae.")}
    vae.load_state_dict(state, strict=False)
    if inflate:
        vae.inflate_temporal()
    step = int(json.loads((ckpt / "trainer.json").read_text())["step"])
    return vae.eval(), step


@torch.no_grad()
def evaluate(vae: VideoVAE, frames: np.ndarray, net: torch.nn.Module) -> dict[str, float]:
    x = torch.from_numpy(frames.copy()).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    y = vae.vae.decode(vae.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    psnr = (10 * torch.log10(4 / ((y - x) ** 2).mean(dim=(0, 1, 3, 4)))).numpy()
    lp = net(x[0].permute(1, 0, 2, 3), y[0].permute(1, 0, 2, 3)).mean().item()
    return {"psnr_first": float(psnr[0]), "psnr_p": float(psnr[1:].mean()), "psnr": float(psnr.mean()), "lpips": lp}


def hue_patches(n: int = 12) -> torch.Tensor:
    """(n, 3, 5, 64, 64) flat clips in [-1, 1]: ``n`` hues at saturation 0.85, value 0.8."""
    import colorsys

    rgb = torch.tensor([colorsys.hsv_to_rgb(i / n, 0.85, 0.8) for i in range(n)], dtype=torch.float32)
    return (rgb.view(n, 3, 1, 1, 1) * 2 - 1).expand(n, 3, 5, 64, 64).contiguous()


@torch.no_grad()
def hue_errors(vae: VideoVAE, patches: torch.Tensor) -> np.ndarray:
    """Per hue, the largest channel error of the decoded patch's centre (mean over its pixels), on [0, 1]."""
    y = torch.cat([vae.vae.decode(vae.vae.encode(p[None]).latent_dist.mode()).sample for p in patches]).clamp(-1, 1)
    err = y[..., 16:48, 16:48].mean(dim=(2, 3, 4)) - patches[..., 16:48, 16:48].mean(dim=(2, 3, 4))
    return (err.abs().amax(1) / 2).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="DIR or inflate:DIR (exported checkpoint folders), or model:DIR")
    ap.add_argument("--profile", default="base")
    ap.add_argument("--manifest", default="data/base/clips/manifest.json")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.manifest)
    clips = [(r.clip_id, r.frames) for p in manifest.shard_paths(args.split) for r in read_clip_shard(p)][: args.clips]
    net = lpips_model("alex", "cpu")
    rows = []
    patches = hue_patches()
    print(
        f"{'checkpoint':44} {'step':>5} {'PSNR 1st':>8} {'PSNR P':>7} {'PSNR':>6} {'LPIPS':>6} {'hue err':>7} "
        f"{'worst':>5}  ({len(clips)} clips)"
    )
    for spec in args.checkpoints:
        t0 = time.perf_counter()
        vae, step = load_vae(spec, args.profile)
        per = [evaluate(vae, f, net) for _, f in clips]
        row = {"checkpoint": spec, "step": step, **{k: float(np.mean([p[k] for p in per])) for k in per[0]}}
        hue = hue_errors(vae, patches)
        row["hue_error_mean"], row["hue_error_max"] = float(hue.mean()), float(hue.max())
        row["hue_errors"] = [round(float(v), 4) for v in hue]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(
            f"{spec:44} {step:5d} {row['psnr_first']:8.2f} {row['psnr_p']:7.2f} {row['psnr']:6.2f} {row['lpips']:6.3f} "
            f"{row['hue_error_mean']:7.3f} {row['hue_error_max']:5.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"clips": [c for c, _ in clips], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
