"""Training speed of candidate model sizes and CPU settings: the numbers a release plan follows from.

For each candidate (a VAE or DiT config, batch and crop) and each setting (threads, fp32 vs bf16
autocast, channels_last_3d) it times full optimisation steps (forward, backward, AdamW) of the
same loss functions the stages use, on random data of the training shape, and prints steps/s and
seconds per step. Run it on the machine that will train:

    python bench/train_speed.py [--only vae|dit] [--steps 3] [--threads 1,2] [--json bench/results/train_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from gnvc.models.profiles import load_profile
from gnvc.models.vae import VideoVAE
from gnvc.refiner.model import Refiner
from gnvc.training.losses import flow_matching_loss, vae_latent_shape, vae_losses

# name → (profile whose VAE config is used, overrides, batch, frames, crop)
VAE_CANDIDATES: dict[str, dict[str, Any]] = {
    "tiny b4 5x32²": {"profile": "tiny", "vae": {}, "batch": 4, "frames": 5, "crop": 32},
    "base32 img b8 64²": {
        "profile": "tiny",
        "vae": {"base_dim": 32, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 1},
        "batch": 8,
        "frames": 1,
        "crop": 64,
    },
    "base32 b2 5x64²": {
        "profile": "tiny",
        "vae": {"base_dim": 32, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 1},
        "batch": 2,
        "frames": 5,
        "crop": 64,
    },
    "base32x2 b2 5x64²": {
        "profile": "tiny",
        "vae": {"base_dim": 32, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2},
        "batch": 2,
        "frames": 5,
        "crop": 64,
    },
    "base48 b2 5x64²": {"profile": "small", "vae": {"num_res_blocks": 1}, "batch": 2, "frames": 5, "crop": 64},
}
DIT_CANDIDATES: dict[str, dict[str, Any]] = {
    "tiny b8 4x16²": {"profile": "tiny", "dit": {}, "batch": 8, "latent": (4, 16, 16)},
    "6L 256d b8 4x16²": {
        "profile": "tiny",
        "dit": {"num_layers": 6, "num_attention_heads": 4, "attention_head_dim": 64, "ffn_dim": 1024},
        "batch": 8,
        "latent": (4, 16, 16),
    },
    "8L 384d b4 5x16²": {
        "profile": "tiny",
        "dit": {"num_layers": 8, "num_attention_heads": 6, "attention_head_dim": 64, "ffn_dim": 1536},
        "batch": 4,
        "latent": (5, 16, 16),
    },
}
SETTINGS = {
    "fp32": {"amp": False, "channels_last": False},
    "bf16": {"amp": True, "channels_last": False},
    "fp32 cl3d": {"amp": False, "channels_last": True},
}


def _time_steps(step: Any, params: list[torch.nn.Parameter], steps: int, amp: bool) -> float:
    opt = torch.optim.AdamW(params, lr=1e-4)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else nullcontext()

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with ctx:
            loss = step()
        loss.backward()
        opt.step()

    one()  # warm-up (allocator, oneDNN primitive cache)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


def bench_vae(cand: dict[str, Any], setting: dict[str, Any], steps: int) -> float:
    cfg = dict(load_profile(cand["profile"])["vae"], **cand["vae"])
    torch.manual_seed(0)
    vae = VideoVAE.from_config(cfg)
    x = torch.rand(cand["batch"], 3, cand["frames"], cand["crop"], cand["crop"]) * 2 - 1
    if setting["channels_last"]:
        for p in vae.parameters():  # only the 5-D (conv3d) weights have a channels_last_3d layout
            if p.ndim == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    eps = torch.randn(vae_latent_shape(x, cfg["z_dim"]))

    def step() -> torch.Tensor:
        return vae_losses(vae, x, eps, kl_weight=1e-4, lpips_weight=0.0, lpips_net=None, recon_loss="l1")["loss"]

    return _time_steps(step, list(vae.parameters()), steps, setting["amp"])


def bench_dit(cand: dict[str, Any], setting: dict[str, Any], steps: int) -> float:
    rcfg = load_profile(cand["profile"])["refiner"]
    rcfg = dict(rcfg, transformer=dict(rcfg["transformer"], **cand["dit"]))
    torch.manual_seed(0)
    refiner = Refiner.from_config(rcfg, seed=0)
    f, h, w = cand["latent"]
    x1 = torch.randn(cand["batch"], 16, f, h, w)
    x0 = torch.randn_like(x1)
    t = torch.rand(cand["batch"]) * 0.6 + 0.4

    def step() -> torch.Tensor:
        return flow_matching_loss(refiner, x1, x0, t)

    return _time_steps(step, [p for p in refiner.parameters() if p.requires_grad], steps, setting["amp"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["vae", "dit"], default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--candidates", default=None, help="comma-separated candidate names (default: all)")
    ap.add_argument("--settings", default="fp32,bf16,fp32 cl3d")
    ap.add_argument("--json", type=Path, default=Path("bench/results/train_speed.json"))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    groups = [("vae", VAE_CANDIDATES, bench_vae), ("dit", DIT_CANDIDATES, bench_dit)]
    wanted = set(args.candidates.split(",")) if args.candidates else None
    for kind, cands, fn in groups:
        if args.only and kind != args.only:
            continue
        for name, cand in cands.items():
            if wanted and name not in wanted:
                continue
            for sname in args.settings.split(","):
                if kind == "dit" and "cl3d" in sname:
                    continue  # no 3D convolutions in the DiT's blocks
                for threads in (int(t) for t in args.threads.split(",")):
                    torch.set_num_threads(threads)
                    s = fn(cand, SETTINGS[sname], args.steps)
                    row = {"kind": kind, "candidate": name, "setting": sname, "threads": threads, "s_per_step": s}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    table = Table(title=f"training speed ({platform.processor() or platform.machine()}, torch {torch.__version__})")
    for col in ("kind", "candidate", "setting", "threads", "s/step", "steps/s"):
        table.add_column(col)
    for r in rows:
        sps = r["s_per_step"]
        table.add_row(r["kind"], r["candidate"], r["setting"], str(r["threads"]), f"{sps:.3f}", f"{1 / sps:.2f}")
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
