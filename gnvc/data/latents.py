"""``gnvc data latents``: VAE-encode clip shards into latent shards, once, so training never re-encodes.

The work is split into one job per clip shard (:class:`ShardJob`), each reading one clip shard and
writing the latent shard of the same name: the ``latents`` stage runs the jobs in a loop, the
Prefect flow fans them out over Ray (``flows/latents.py``), and both finish with
:func:`finalize_latents`, which writes the manifest and swaps the output directory in atomically.
Latents are the VAE posterior means, *normalised* with the VAE's ``latents_mean/std`` — the
representation the codec and the DiT prior work on (docs/ARCHITECTURE.md) — and the manifest
records the normalisation and a hash of the VAE weights that produced them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gnvc.data.shards import (
    CHANNEL_ORDERS,
    CLIP_FORMAT,
    FORMAT_VERSION,
    LATENT_DTYPES,
    LATENT_FORMAT,
    LatentRecord,
    ShardError,
    publish_dir,
    read_clip_shard,
    read_manifest,
    sha256_bytes,
    variant_id,
    write_latent_shard,
    write_manifest,
)
from gnvc.errors import ConfigError, WeightsError


@dataclass(frozen=True)
class ShardJob:
    """Encode ``clip_shard`` into ``out_path`` (picklable: it travels to Ray workers)."""

    clip_shard: str  # absolute path
    clip_shard_name: str  # its path relative to the clip manifest
    split: str
    out_path: str  # absolute path in the staging directory
    vae_dir: str  # the model directory (its vae/ subfolder is loaded)
    batch_size: int
    dtype: str
    threads: int = 0
    color_variants: int = 0  # extra encodings of each training clip under other RGB channel orders


def color_variants(clip_id: str, n: int) -> list[tuple[int, int, int]]:
    """``n`` channel orders other than RGB for ``clip_id`` (at most 5), the same on every machine.

    Why: the latents are what the DiT prior and the codec learn from; a prior that never saw a
    green latent pulls a refined green towards the colours it knows. Drawn from a hash of the
    clip id (not the process's RNG), so a shard encodes the same variants wherever it runs.
    """
    if not 0 <= n <= 5:
        raise ConfigError(f"latents.color_variants must be 0..5 (other RGB orders), got {n}")
    orders = list(CHANNEL_ORDERS[1:])
    rank = sorted(orders, key=lambda o: hashlib.sha256(f"{clip_id}/{o}".encode()).hexdigest())
    return rank[:n]


@dataclass
class LatentPlan:
    """Everything :func:`finalize_latents` needs after the jobs ran (also picklable)."""

    out_dir: str
    staging_dir: str
    clips_manifest: str
    clips_dataset_sha256: str
    vae_dir: str
    jobs: list[ShardJob]


def vae_weights_sha256(model_dir: str | Path) -> str:
    """SHA-256 over the VAE's files (names and bytes): which VAE produced a set of latents."""
    vae_dir = Path(model_dir) / "vae"
    h = hashlib.sha256()
    for f in sorted(p for p in vae_dir.rglob("*") if p.is_file()):
        h.update(f.relative_to(vae_dir).as_posix().encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def load_vae(model_dir: str | Path) -> Any:
    """The VAE of a model directory (``GnvcModel`` layout): only ``vae/`` is loaded, not the codec."""
    from gnvc.models.vae import VideoVAE

    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise WeightsError(
            f"{model_dir}: not a gnvc model directory (model_index.json missing); "
            "the latents stage needs the VAE the vae stage trains (`dvc repro vae`)"
        )
    return VideoVAE.from_pretrained(model_dir / "vae").eval()


def normalisation_of(vae: Any) -> dict[str, Any]:
    return {
        "normalised": True,
        "formula": "latents = (z - latents_mean) / latents_std, z the VAE posterior mean",
        "latents_mean": [float(v) for v in vae.mean.flatten()],
        "latents_std": [float(v) for v in vae.std.flatten()],
    }


def plan_latents(section: dict[str, Any], *, profile: str = "tiny") -> LatentPlan:
    """Check the inputs and make one job per clip shard, writing into a fresh staging directory."""
    clips_manifest = Path(str(section.get("clips_manifest", "data/clips/manifest.json")))
    vae_dir = Path(str(section.get("vae", "build/{profile}/vae")).format(profile=profile))
    out_dir = Path(str(section.get("out_dir", "data/latents")))
    dtype = str(section.get("dtype", "float32"))
    if dtype not in LATENT_DTYPES:
        raise ConfigError(f"latents.dtype must be one of {LATENT_DTYPES}, got {dtype!r}")
    batch_size = int(section.get("batch_size", 4))
    if batch_size < 1:
        raise ConfigError(f"latents.batch_size must be ≥ 1, got {batch_size}")
    splits = section.get("splits") or None
    man = read_manifest(clips_manifest, CLIP_FORMAT)
    load_vae(vae_dir)  # fail here, with a clear message, rather than in every worker
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    jobs = [
        ShardJob(
            clip_shard=str((man.root / s["path"]).resolve()),
            clip_shard_name=s["path"],
            split=s["split"],
            out_path=str((staging / s["path"]).resolve()),
            vae_dir=str(vae_dir.resolve()),
            batch_size=batch_size,
            dtype=dtype,
            threads=int(section.get("threads", 0)),
            color_variants=int(section.get("color_variants", 0)),
        )
        for s in man.shards
        if splits is None or s["split"] in splits
    ]
    if not jobs:
        shutil.rmtree(staging, ignore_errors=True)
        raise ShardError(f"{clips_manifest}: no clip shards to encode (splits {splits})")
    return LatentPlan(
        out_dir=str(out_dir),
        staging_dir=str(staging),
        clips_manifest=str(clips_manifest.resolve()),
        clips_dataset_sha256=str(man.data.get("dataset_sha256", "")),
        vae_dir=str(vae_dir.resolve()),
        jobs=jobs,
    )


@torch.inference_mode()
def encode_shard(job: ShardJob, vae: Any | None = None) -> dict[str, Any]:
    """Encode one clip shard; returns its manifest entries (shard entry + per-clip rows)."""
    if job.threads > 0:
        torch.set_num_threads(job.threads)
    t0 = time.perf_counter()
    vae = vae if vae is not None else load_vae(job.vae_dir)
    norm = normalisation_of(vae)
    records: list[LatentRecord] = []
    pending: list[tuple[str, str, str, np.ndarray]] = []  # clip id, split, pixel SHA-256, frames

    def flush() -> None:
        x = torch.from_numpy(np.stack([frames for *_, frames in pending]))
        x = x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
        z = vae.encode(x).float().numpy().astype(job.dtype)
        for (clip_id, split, sha, _), lat in zip(pending, z, strict=True):
            records.append(LatentRecord(clip_id, split, sha, np.ascontiguousarray(lat)))
        pending.clear()

    def add(item: tuple[str, str, str, np.ndarray]) -> None:
        if pending and item[3].shape != pending[0][3].shape:
            flush()
        pending.append(item)
        if len(pending) == job.batch_size:
            flush()

    for clip in read_clip_shard(job.clip_shard):
        add((clip.clip_id, clip.split, clip.sha256, clip.frames))
        if clip.split == "train":
            for order in color_variants(clip.clip_id, job.color_variants):
                frames = np.ascontiguousarray(clip.frames[..., list(order)])
                add((variant_id(clip.clip_id, order), clip.split, sha256_bytes(frames.tobytes()), frames))
    if pending:
        flush()
    entry = write_latent_shard(job.out_path, records, norm)
    return {
        "shard": {"path": job.clip_shard_name, "split": job.split, "clip_shard": job.clip_shard_name, **entry},
        "clips": [
            {
                "clip_id": r.clip_id,
                "split": r.split,
                "shard": job.clip_shard_name,
                "row": i,
                "shape": list(r.latents.shape),
                "dtype": job.dtype,
                "sha256": r.sha256,
                "clip_sha256": r.clip_sha256,
            }
            for i, r in enumerate(records)
        ],  # fmt: skip
        "normalisation": norm,
        "seconds": time.perf_counter() - t0,
        "pid": os.getpid(),
    }


def finalize_latents(plan: LatentPlan, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the manifest (last) and move the staging directory to ``out_dir``; return metrics."""
    staging, out_dir = Path(plan.staging_dir), Path(plan.out_dir)
    try:
        if len(results) != len(plan.jobs):
            raise ShardError(f"latents: {len(results)} shard results for {len(plan.jobs)} jobs")
        norms = {str(r["normalisation"]) for r in results}
        if len(norms) != 1:
            raise ShardError("latents: shards were encoded with different VAEs (normalisation differs)")
        order = {j.clip_shard_name: i for i, j in enumerate(plan.jobs)}
        results = sorted(results, key=lambda r: order[r["shard"]["path"]])
        try:
            clips_ref = os.path.relpath(plan.clips_manifest, out_dir.resolve())
        except ValueError:  # another drive (Windows): keep it absolute
            clips_ref = plan.clips_manifest
        clips = [c for r in results for c in r["clips"]]
        listed = {r["shard"]["path"] for r in results}
        if len(listed) != len(results) or listed != set(order):
            raise ShardError("latents: the shard results do not cover every job exactly once")
        for stray in [p for p in staging.rglob("*") if p.is_file() and p.relative_to(staging).as_posix() not in listed]:
            stray.unlink()  # a temporary of a worker killed mid-write (its retry wrote the shard again)
        manifest = {
            "format": LATENT_FORMAT,
            "version": FORMAT_VERSION,
            "clips_manifest": {"path": clips_ref, "dataset_sha256": plan.clips_dataset_sha256},
            "vae": {"model_dir": os.path.relpath(plan.vae_dir), "weights_sha256": vae_weights_sha256(plan.vae_dir)},
            "normalisation": results[0]["normalisation"],
            "dtype": plan.jobs[0].dtype,
            "latent_channels": clips[0]["shape"][0] if clips else 0,
            "shards": [r["shard"] for r in results],
            "clips": clips,
        }
        write_manifest(staging, manifest)
        publish_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = sum(r["seconds"] for r in results)
    return {
        "clips": len(clips),
        "shards": len(results),
        "bytes": sum(r["shard"]["bytes"] for r in results),
        "encode_s": round(seconds, 3),
        "clips_per_s": round(len(clips) / seconds, 3) if seconds > 0 else 0.0,
    }


def abort_latents(plan: LatentPlan) -> None:
    """Remove the staging directory of a plan whose jobs failed."""
    shutil.rmtree(plan.staging_dir, ignore_errors=True)


def encode_latents(section: dict[str, Any], *, profile: str = "tiny", progress: bool = True) -> dict[str, Any]:
    """The whole latents stage in this process: plan, encode every shard, finalize."""
    t0 = time.perf_counter()
    plan = plan_latents(section, profile=profile)
    try:
        vae = load_vae(plan.vae_dir)
        results = [
            encode_shard(job, vae) for job in tqdm(plan.jobs, desc="latents", unit="shard", disable=not progress)
        ]
    except BaseException:
        abort_latents(plan)
        raise
    metrics = finalize_latents(plan, results)
    metrics["wall_s"] = round(time.perf_counter() - t0, 3)
    return metrics


__all__ = [
    "LatentPlan",
    "ShardJob",
    "abort_latents",
    "encode_latents",
    "encode_shard",
    "finalize_latents",
    "plan_latents",
]
