"""Wan2.1-T2V-1.3B at its real size on this CPU, random weights: build, import, one Stage I step, coding.

Every phase runs in a fresh process whose peak RSS is read with ``os.wait4`` (the kernel's maximum
resident set of that process alone), so one phase's memory never hides another's:

1. ``build``        ``gnvc.models.wan21.build``: published configs, seeded random weights (5.7 + 0.5 GB).
2. ``import_vae``   the pipeline's ``vae`` stage importing ``DIR/vae`` (``vae.import_from``).
3. ``import_prior`` the ``prior`` stage importing ``DIR/transformer`` (``prior.import_from``).
4. ``stage1_step``  one Stage I step exactly as ``gnvc.stages.stage1`` computes it (its parameter
                    groups with ``dit_tuning: lora``, ``stage1_losses``, AdamW) on one random
                    latent clip of 17×64×64 pixels (5×8×8 latents, 80 DiT tokens), Euler steps
                    checkpointed; plus the saved-activation bytes of one velocity evaluation and of
                    the codec, counted with ``torch.autograd.graph.saved_tensors_hooks``.
5. ``codec``        ``encode_video`` + ``decode_video`` of 17 frames of 64×64 with the imported model
                    (refinement 1 Euler step, to bound the time).
6. ``vae_saved``    the saved-activation bytes of the VAE decoder's forward with grad (Stage II's
                    extra) at 17×64×64 on the CPU, against the same count on the meta device.
7. ``model``        meta-device counts (no memory, no compute) of saved activations and FLOPs at
                    the sizes docs/training.md tabulates; the CPU phases check them where they overlap.

Attention is counted as flash attention saves it (q, k, v, out, logsumexp), which is what the CPU
run does (torch's CPU SDPA is a flash kernel) and what a GPU run does; on the meta device SDPA
would fall back to the math path and count an N×N matrix, so the meta phase calls the flash op.

    python bench/wan21_real_size.py [--work /tmp/gnvc-wan21] [--json bench/results/wan21_real_size.json]

Run it with OMP_NUM_THREADS=1: ~6 min of CPU time (the phases' wall time grows with whatever else
shares the cores), a peak RSS of ~10.8 GiB in the Stage I step (≈ 6 GB of it the DiT's safetensors
pages mapped from disk), ~19 GB of scratch disk. ``--table`` prints docs/training.md's table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

PHASES = ("build", "import_vae", "import_prior", "stage1_step", "codec", "vae_saved", "model")
CLIP = (17, 64, 64)  # frames, height, width of the CPU runs
LAMBDAS = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]  # params.yaml's stage1 lambdas
# (label, pixel frames, height, width) of the memory model's table
SIZES = [("17x64x64 (CPU run)", 17, 64, 64), ("17x256x256", 17, 256, 256), ("81x480x832", 81, 480, 832)]


# ------------------------------------------------------------------------------ measuring helpers
class SavedBytes:
    """Bytes autograd saves for backward, parameters (and views of them) excluded.

    A storage saved twice (a tensor and its views, or one tensor saved by two operations) costs
    once: on the CPU by storage address, on the meta device (no addresses) by the view's base.
    """

    def __init__(self, modules: list[Any]) -> None:
        self.param_ids = {id(p) for m in modules for p in m.parameters()}
        self.param_ptrs = {
            p.untyped_storage().data_ptr() for m in modules for p in m.parameters() if p.device.type != "meta"
        }
        self.total = 0
        self.seen: set[int] = set()
        self.keep: list[Any] = []

    def pack(self, t: Any) -> Any:
        base = t._base if t._base is not None else t
        if id(base) in self.param_ids or id(t) in self.param_ids:
            return t
        if t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr in self.param_ptrs or ptr in self.seen:
                return t
            self.seen.add(ptr)
            self.total += t.untyped_storage().nbytes()
        else:  # meta: no storage addresses; a view counts with its base, once
            if id(base) in self.seen:
                return t
            self.seen.add(id(base))
            self.keep.append(base)  # ids stay unique while counted
            self.total += base.untyped_storage().nbytes()
        return t

    @contextlib.contextmanager
    def __call__(self) -> Iterator[SavedBytes]:
        import torch

        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            yield self


@contextlib.contextmanager
def flash_sdpa() -> Iterator[None]:
    """Route SDPA to the flash-attention op (what CPU and GPU runs use) on the meta device."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):  # noqa: ANN001, ANN003, ANN202
        if query.device.type != "meta" or attn_mask is not None or kw.get("enable_gqa"):
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **kw)  # fmt: skip
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, scale=scale
        )[0]

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
    return (1, 16, 1 + (frames - 1) // 4, height // 8, width // 8)


def _params(work: Path) -> dict[str, Any]:
    src = str(work / "Wan2.1-T2V-1.3B-Diffusers")
    return {
        "profile": "wan2.1",
        "seed": 0,
        "vae": {"import_profiles": ["wan2.1"], "import_from": src, "output": str(work / "vae")},
        "prior": {"import_profiles": ["wan2.1"], "import_from": src, "input": str(work / "vae"),
                  "output": str(work / "prior")},
    }  # fmt: skip


# ------------------------------------------------------------------------------ phases (child side)
def phase_build(work: Path) -> dict[str, Any]:
    from gnvc.models import wan21

    summary = wan21.build(work / "Wan2.1-T2V-1.3B-Diffusers", seed=0, overwrite=True)
    return {
        "dit_parameters": summary["transformer"]["parameters"],
        "vae_parameters": summary["vae"]["parameters"],
        "dit_bytes": summary["transformer"]["bytes"],
        "vae_bytes": summary["vae"]["bytes"],
        "dit_files": summary["transformer"]["files"],
    }


def phase_import_vae(work: Path) -> dict[str, Any]:
    from gnvc.stages import vae

    return vae.run(_params(work))


def phase_import_prior(work: Path) -> dict[str, Any]:
    from gnvc.stages import prior

    out = prior.run(_params(work))
    shutil.rmtree(work / "vae")  # 6 GB of placeholder DiT: only the prior's directory is used later
    return out


def phase_stage1_step(work: Path) -> dict[str, Any]:
    import torch

    from gnvc.models.model_dir import GnvcModel
    from gnvc.training.common import codec_refiner_parameters
    from gnvc.training.losses import stage1_losses

    t0 = time.perf_counter()
    model = GnvcModel.from_pretrained(work / "prior")
    load_s = time.perf_counter() - t0
    groups = codec_refiner_parameters(model, {"dit_tuning": "lora", "lora": {"rank": 8, "alpha": 8}})
    codec, refiner = model.codec, model.refiner
    assert refiner is not None
    model.train()
    refiner.checkpoint_steps = True
    trainable = {
        "codec": sum(p.numel() for p in codec.parameters() if p.requires_grad),
        "adapter": sum(p.numel() for p in refiner.adapter.parameters() if p.requires_grad),
        "lora": sum(p.numel() for n, p in refiner.transformer.named_parameters() if p.requires_grad and "lora_" in n),
    }
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    shape = latent_shape(*CLIP)
    x1 = torch.randn(shape, generator=g)  # unit-scale like the VAE's normalised latents
    x0 = torch.randn(shape, generator=g)
    q = torch.tensor([3])
    tau = torch.tensor([0.85])
    lambdas = torch.tensor(LAMBDAS)

    # Saved activations of one velocity evaluation (with grad, LoRA on) and of the codec's forward.
    counter = SavedBytes([model])
    with counter():
        out = codec(x1, q)
    codec_saved = counter.total
    counter = SavedBytes([model])
    with counter():
        t1, c1 = time.perf_counter(), time.process_time()
        v = refiner.velocity(x0, torch.tensor([0.8]), out.context.detach())
        eval_s, eval_cpu_s = time.perf_counter() - t1, time.process_time() - c1
    eval_saved = counter.total
    del out, v

    t1, c1 = time.perf_counter(), time.process_time()
    losses = stage1_losses(codec, refiner, x1, q, x0, tau, lambdas, t_n=0.7, steps=5, codec_mse_weight=1.0)
    fwd_s = time.perf_counter() - t1
    losses["loss"].backward()
    bwd_s = time.perf_counter() - t1 - fwd_s
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step_s, step_cpu_s = time.perf_counter() - t1, time.process_time() - c1
    adam_bytes = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    )
    return {
        "load_s": round(load_s, 1),
        "tokens": shape[2] * (shape[3] // 2) * (shape[4] // 2),
        "trainable": trainable,
        "trainable_total": sum(trainable.values()),
        "velocity_eval_s": round(eval_s, 1),
        "velocity_eval_cpu_s": round(eval_cpu_s, 1),
        "velocity_eval_saved_bytes": eval_saved,
        "codec_saved_bytes": codec_saved,
        "forward_s": round(fwd_s, 1),
        "backward_s": round(bwd_s, 1),
        "step_s": round(step_s, 1),
        "step_cpu_s": round(step_cpu_s, 1),
        "adam_state_bytes": adam_bytes,
        "loss": float(losses["loss"]),
        "finite": bool(torch.isfinite(losses["loss"])),
    }


def phase_codec(work: Path) -> dict[str, Any]:
    import numpy as np

    from gnvc.io.video import Video
    from gnvc.models.model_dir import GnvcModel
    from gnvc.videocodec import decode_video, encode_video

    t0 = time.perf_counter()
    model = GnvcModel.from_pretrained(work / "prior")
    load_s = time.perf_counter() - t0
    frames, h, w = CLIP
    yy, xx = np.mgrid[0:h, 0:w]
    clip = np.stack([
        np.stack([(xx * 4 + 3 * t) % 256, (yy * 4) % 256, ((xx + yy) * 2 + 5 * t) % 256], -1) for t in range(frames)
    ]).astype(np.uint8)  # fmt: skip
    video = Video(clip, Fraction(16))
    t1, c1 = time.perf_counter(), time.process_time()
    res = encode_video(model, video, quality=3, steps=1)
    enc_s, enc_cpu = time.perf_counter() - t1, time.process_time() - c1
    t1, c1 = time.perf_counter(), time.process_time()
    out = decode_video(model, res.data)
    dec_s, dec_cpu = time.perf_counter() - t1, time.process_time() - c1
    assert out.frames.shape == video.frames.shape
    return {"load_s": round(load_s, 1), "encode_s": round(enc_s, 1), "decode_s": round(dec_s, 1),
            "encode_cpu_s": round(enc_cpu, 1), "decode_cpu_s": round(dec_cpu, 1),
            "bytes": res.num_bytes, "refine_steps": 1, "weights_hash": model.weights_hash.hex()}  # fmt: skip


def _vae_decode_saved(vae: Any, latents: Any) -> int:
    counter = SavedBytes([vae])
    with counter():
        vae.decode(latents.requires_grad_(True))
    return counter.total


def phase_vae_saved(work: Path) -> dict[str, Any]:
    import torch

    from gnvc.models import wan21
    from gnvc.models.vae import VideoVAE

    vae = VideoVAE.from_pretrained(work / "Wan2.1-T2V-1.3B-Diffusers" / "vae")
    vae.requires_grad_(False)
    shape = latent_shape(*CLIP)
    t0 = time.perf_counter()
    c0 = time.process_time()
    cpu = _vae_decode_saved(vae, torch.randn(shape))
    cpu_s, cpu_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    with torch.device("meta"):
        meta_vae = VideoVAE(wan21.meta_vae())
    meta_vae.requires_grad_(False)  # frozen as in Stage II (else its weight gradients' inputs count too)
    meta = _vae_decode_saved(meta_vae, torch.randn(shape, device="meta"))
    return {"cpu_saved_bytes": cpu, "meta_saved_bytes": meta, "cpu_forward_s": round(cpu_s, 1),
            "cpu_forward_cpu_s": round(cpu_cpu_s, 1)}  # fmt: skip


def phase_model(work: Path) -> dict[str, Any]:
    """Meta-device counts: per velocity evaluation (LoRA and frozen DiT) and per VAE decode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gnvc.models import wan21
    from gnvc.models.profiles import load_profile
    from gnvc.models.vae import VideoVAE
    from gnvc.refiner import Refiner

    cfg = load_profile("wan2.1")["refiner"]
    rows = []
    for label, frames, h, w in SIZES:
        shape = latent_shape(frames, h, w)
        row: dict[str, Any] = {"size": label, "latent": list(shape[2:]), "tokens": shape[2] * shape[3] * shape[4] // 4}
        for tuning in ("lora", "frozen", "full"):
            with torch.device("meta"):
                refiner = Refiner.from_config(cfg)
            refiner.set_tuning(tuning, {"rank": 8})
            # float32 (the CPU run), then all-bf16: a lower bound of what bf16 autocast saves
            # (autocast keeps norms and softmax statistics in float32).
            for dtype, suffix in ((torch.float32, ""), (torch.bfloat16, "_bf16")):
                refiner = refiner.to(dtype)
                counter = SavedBytes([refiner])
                x = torch.randn(shape, device="meta", dtype=dtype)
                ctx = torch.randn(1, 64, *shape[2:], device="meta", dtype=dtype, requires_grad=True)
                with flash_sdpa(), counter(), FlopCounterMode(display=False) as flops:
                    refiner.velocity(x, torch.tensor([0.8], device="meta"), ctx)
                row[f"dit_eval_saved_bytes_{tuning}{suffix}"] = counter.total
                if not suffix:
                    row["dit_eval_forward_flops"] = flops.get_total_flops()
        # torch's FLOP counter has no formula for the CPU flash-attention op: attention's matmuls,
        # 2·N·M·D for QKᵀ and again for AV per layer (self: M = N; cross: M = 512 text tokens).
        tc = refiner.transformer.config
        dim, n = tc.num_attention_heads * tc.attention_head_dim, row["tokens"]
        text = refiner.null_text.shape[0]
        row["dit_eval_attention_flops"] = tc.num_layers * 4 * n * (n + text) * dim
        with torch.device("meta"):
            vae = VideoVAE(wan21.meta_vae())
        vae.requires_grad_(False)
        with FlopCounterMode(display=False) as flops:
            row["vae_decode_saved_bytes"] = _vae_decode_saved(vae, torch.randn(shape, device="meta"))
        row["vae_decode_forward_flops"] = flops.get_total_flops()
        vae = vae.to(torch.bfloat16)
        row["vae_decode_saved_bytes_bf16"] = _vae_decode_saved(
            vae, torch.randn(shape, device="meta", dtype=torch.bfloat16)
        )
        rows.append(row)
    return {"rows": rows}


# ------------------------------------------------------------------------------ driver (parent side)
def run_phase(name: str, work: Path) -> dict[str, Any]:
    """Run one phase in a fresh process; its result plus wall time and peak RSS (``os.wait4``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--phase", name, "--work", str(work)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    lines = proc.stdout.read().splitlines()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} failed (exit {proc.returncode})")
    result = json.loads(lines[-1])
    cpu_s = usage.ru_utime + usage.ru_stime  # with other jobs on the cores, CPU time is the fairer clock
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_s, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
        **result,
    }


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Wan2.1-T2V-1.3B at real size, random weights (1 thread)")
    for col in ("phase", "wall s", "CPU s", "peak RSS GiB", "what"):
        table.add_column(col)
    what = {
        "build": lambda r: (
            f"DiT {r['dit_parameters']:,} + VAE {r['vae_parameters']:,} params, {len(r['dit_files'])} DiT shards"
        ),
        "import_vae": lambda r: f"weights hash {r['weights_hash']}",
        "import_prior": lambda r: f"weights hash {r['weights_hash']}",
        "stage1_step": lambda r: (
            f"{r['tokens']} tokens, {r['trainable_total']:,} trainable, fwd {r['forward_s']} s + bwd "
            f"{r['backward_s']} s, one velocity eval saves {r['velocity_eval_saved_bytes'] / 1e6:.0f} MB"
        ),
        "codec": lambda r: f"encode {r['encode_s']} s, decode {r['decode_s']} s (1 refine step), {r['bytes']} B",
        "vae_saved": lambda r: (
            f"decoder saves {r['cpu_saved_bytes'] / 1e6:.0f} MB (CPU), {r['meta_saved_bytes'] / 1e6:.0f} MB (meta)"
        ),
        "model": lambda r: f"{len(r['rows'])} sizes counted on the meta device",
    }  # fmt: skip
    for name, r in results["phases"].items():
        table.add_row(name, str(r["wall_s"]), str(r["cpu_s"]), str(r["peak_rss_gib"]), what[name](r))
    Console().print(table)


GPU_BYTES = 80e9  # one 80 GB card (A100/H100)
FIT_FRACTION = 0.9  # leave 10 % for the CUDA context, allocator fragmentation and workspaces
GPU_FLOPS = 989e12 * 0.4  # H100 SXM dense bf16 peak at an assumed 40 % utilisation
EULER_STEPS = 5  # the wan2.1 profile's coding.steps (Stage I: + 1 CFM evaluation)
BLOCK_GATHER = 2 * 4 * 1_418_996_800 / 30  # FSDP: one DiT block all-gathered + one prefetched (fp32)


def memory_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """docs/training.md's memory/time model, evaluated from the measured counts (see its formulas).

    Per GPU and per sample: W (fp32 weights: DiT + VAE + codec + adapter), S = 12 B per trainable
    parameter (fp32 gradient + Adam's two moments), A (saved activations, all-bf16 count: the lower
    bound of bf16 autocast; the fp32 count is the upper bound). FSDP shards W and S over N GPUs and
    all-gathers one block at a time; it never shards A.
    """
    ph = results["phases"]
    tr = ph["stage1_step"]["trainable"]
    dit, vae = ph["build"]["dit_parameters"], ph["build"]["vae_parameters"]
    weights = 4 * (dit + vae + tr["codec"] + tr["adapter"] + tr["lora"])
    rows = []
    for r in ph["model"]["rows"]:
        evals1 = EULER_STEPS + 1
        flops_eval = r["dit_eval_forward_flops"] + r["dit_eval_attention_flops"]
        for stage, tuning in (("I", "lora"), ("I", "full"), ("II", "lora")):
            trainable = tr["codec"] + tr["adapter"] + (tr["lora"] if tuning == "lora" else dit)
            states = 12 * trainable
            a16, a32 = r[f"dit_eval_saved_bytes_{tuning}_bf16"], r[f"dit_eval_saved_bytes_{tuning}"]
            if stage == "I":
                act_plain, act_ckpt = evals1 * a16, a16
                flops = evals1 * flops_eval * (3 if tuning == "full" else 2)
            else:  # decoder checkpointed as one unit: its whole activation set is live during its recompute
                d16 = r["vae_decode_saved_bytes_bf16"]
                act_plain, act_ckpt = EULER_STEPS * a16 + d16, max(d16, a16)
                flops = EULER_STEPS * flops_eval * 2 + 2 * r["vae_decode_forward_flops"]
            flops_ckpt = flops + (evals1 if stage == "I" else EULER_STEPS) * flops_eval
            if stage == "II":
                flops_ckpt += r["vae_decode_forward_flops"]
            one = weights + states + act_ckpt
            fsdp8 = (weights + states) / 8 + BLOCK_GATHER + act_ckpt
            rows.append({
                "size": r["size"], "tokens": r["tokens"], "stage": stage, "tuning": tuning,
                "weights_gb": weights / 1e9, "states_gb": states / 1e9,
                "act_no_ckpt_gb": act_plain / 1e9, "act_ckpt_gb": act_ckpt / 1e9,
                "act_ckpt_fp32_gb": (a32 if stage == "I" else max(a32, r["vae_decode_saved_bytes"])) / 1e9,
                "one_gpu_gb": one / 1e9, "fsdp8_gb": fsdp8 / 1e9,
                "fits_one": one <= FIT_FRACTION * GPU_BYTES, "fits_fsdp8": fsdp8 <= FIT_FRACTION * GPU_BYTES,
                "step_tflop": flops_ckpt / 1e12, "h100_s": flops_ckpt / GPU_FLOPS,
            })  # fmt: skip
    return rows


def print_memory_table(results: dict[str, Any]) -> None:
    """The markdown table docs/training.md shows."""
    print("| clip (tokens) | stage, tuning | W + S GB | A no ckpt GB | A step-ckpt GB (fp32) | 1 GPU GB | "
          "FSDP×8 GB/GPU | step TFLOP | H100 s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in memory_rows(results):
        one = f"{r['one_gpu_gb']:.0f}" + ("" if r["fits_one"] else " ✗")
        fsdp = f"{r['fsdp8_gb']:.0f}" + ("" if r["fits_fsdp8"] else " ✗")
        print(
            f"| {r['size']} ({r['tokens']}) | {r['stage']}, {r['tuning']} | "
            f"{r['weights_gb']:.1f} + {r['states_gb']:.1f} | {r['act_no_ckpt_gb']:.0f} | "
            f"{r['act_ckpt_gb']:.1f} ({r['act_ckpt_fp32_gb']:.1f}) | {one} | {fsdp} | "
            f"{r['step_tflop']:.0f} | {r['h100_s']:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/gnvc-wan21"), help="scratch directory (~19 GB)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/wan21_real_size.json"))
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset, in order")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--table", action="store_true", help="print docs/training.md's table from --json, run nothing")
    args = parser.parse_args(argv)
    if args.table:
        print_memory_table(json.loads(args.json.read_text()))
        return 0
    if args.phase:  # child: run one phase, print its result as the last line
        import torch

        torch.set_num_threads(1)
        print(json.dumps(globals()[f"phase_{args.phase}"](args.work)), flush=True)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": "2-core shared CPU, OMP_NUM_THREADS=1", "clip": list(CLIP), "phases": {}}
    if args.json.is_file():  # a partial rerun (--phases) keeps the other phases' numbers
        results["phases"] = json.loads(args.json.read_text()).get("phases", {})
    for name in args.phases.split(","):
        print(f"[wan21] {name} ...", file=sys.stderr, flush=True)
        results["phases"][name] = run_phase(name, args.work)
        print(f"[wan21] {name}: {json.dumps(results['phases'][name])[:300]}", file=sys.stderr, flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
