"""``gnvc metrics`` (compare two videos) and ``gnvc eval`` (gnvc against the anchors, with a report)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gnvc.cli.options import status
from gnvc.errors import InputError


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def _per_anchor(items: tuple[str, ...], what: str) -> dict[str, str]:
    """``("x264=22,27", "vvc=30")`` → ``{"x264": "22,27", "vvc": "30"}`` (anchor names resolved)."""
    from gnvc.evaluation.anchors import anchor_spec

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise InputError(f"{what} must look like ANCHOR=VALUE (e.g. x264=22,27,32), got {item!r}")
        out[anchor_spec(name).name] = value.strip()
    return out


clip_weights_option = click.option(
    "--clip-weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Local transformers CLIP directory (enables CLIP-F).",
)


@click.command("metrics")
@click.argument("ref", type=click.Path(path_type=Path))
@click.argument("dist", type=click.Path(path_type=Path))
@click.option(
    "--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write per-frame values here (JSON)."
)
@click.option(
    "--metrics",
    "metric_names",
    default=None,
    help="Comma-separated subset of psnr_rgb,psnr_y,msssim,lpips_alex,lpips_vgg,dists,ewarp,clipf.",
)
@click.option("--frames", "max_frames", type=int, default=None, help="Compare at most this many frames.")
@click.option("--size", default=None, help="WIDTHxHEIGHT, for raw .yuv inputs.")
@clip_weights_option
@click.option("--device", default="cpu", show_default=True, help="torch device for the network metrics.")
def metrics(ref, dist, json_out, metric_names, max_frames, size, clip_weights, device) -> None:
    """Compare DIST with REF: PSNR, MS-SSIM, LPIPS, DISTS, E_warp (and CLIP-F with local CLIP weights)."""
    from gnvc.cli.options import resolve_device
    from gnvc.io.video import parse_size, read_video
    from gnvc.metrics.compute import METRICS, compute_metrics

    resolve_device(device)

    wh = parse_size(size) if size else None
    a = read_video(ref, size=wh, max_frames=max_frames)
    b = read_video(dist, size=wh, max_frames=max_frames)
    if a.num_frames != b.num_frames:
        n = min(a.num_frames, b.num_frames)
        click.echo(f"note: {ref} has {a.num_frames} frames, {dist} {b.num_frames}; comparing the first {n}", err=True)
        a.frames, b.frames = a.frames[:n], b.frames[:n]
    result = compute_metrics(a, b, metric_names, device=device, clip_path=clip_weights)
    result.update(reference=str(ref), distorted=str(dist))
    for name in result["metrics"]:
        v = result["mean"][name]
        shown = "n/a" if v is None else f"{v:.4f}"
        click.echo(f"{METRICS[name].label:<18} {shown}")
    if json_out is not None:
        from gnvc.evaluation.report import json_safe

        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False))
        status(f"per-frame values written to {json_out}", err=True)


@click.command("eval")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="gnvc model directory; without it only the anchors are evaluated.",
)
@click.option(
    "--anchors",
    default="vvc,x265,svtav1,x264",
    show_default=True,
    help="Comma-separated anchors (vvc, x265, svtav1, x264) or 'none'.",
)
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True, help="Report directory.")
@click.option("--qualities", default=None, help="gnvc quality indices, e.g. 0,2,4 (default: all).")
@click.option("--qp", "qp_items", multiple=True, help="Anchor QPs, e.g. --qp x264=22,27,32 (repeatable).")
@click.option("--preset", "preset_items", multiple=True, help="Anchor preset, e.g. --preset vvc=faster (repeatable).")
@click.option("--frames", "max_frames", type=int, default=None, help="Use the first N frames of each video.")
@click.option(
    "--refinement",
    type=click.Choice(["on", "off", "both"]),
    default="on",
    show_default=True,
    help="gnvc decoding with the DiT refinement, without it (steps=0), or both as two methods.",
)
@click.option("--metrics", "metric_names", default=None, help="Comma-separated metrics (default: all but CLIP-F).")
@click.option("--reference", default=None, help="Anchor the report leads with (default: vvc when evaluated).")
@clip_weights_option
@click.option("--device", default="cpu", show_default=True, help="torch device for gnvc and the network metrics.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes for the rate points.")
@click.option("--no-visuals", is_flag=True, help="Skip the side-by-side frames and time slices.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Recompute every anchor point instead of reusing those in gnvc's cache (eval-points/).",
)
def evaluate(
    videos,
    weights,
    anchors,
    out_dir,
    qualities,
    qp_items,
    preset_items,
    max_frames,
    refinement,
    metric_names,
    reference,
    clip_weights,
    device,
    workers,
    no_visuals,
    no_cache,
) -> None:
    """Evaluate gnvc (with --weights) and the anchors on VIDEOS; writes report.md/report.json to -o."""
    from gnvc.cli.options import resolve_device
    from gnvc.evaluation.anchors import anchor_spec
    from gnvc.evaluation.evaluate import evaluate_videos, local_workers
    from gnvc.evaluation.methods import build_methods
    from gnvc.evaluation.point_cache import PointCache

    resolve_device(device)

    anchor_names = [] if anchors.strip().lower() in ("", "none") else [a for a in anchors.split(",") if a.strip()]
    qps = {k: _int_list(v, f"--qp {k}") for k, v in _per_anchor(qp_items, "--qp").items()}
    presets = _per_anchor(preset_items, "--preset")
    unused = sorted((set(qps) | set(presets)) - {anchor_spec(a).name for a in anchor_names})
    if unused:
        raise InputError(f"--qp/--preset given for {', '.join(unused)}, which is not in --anchors")
    if max_frames is not None and max_frames < 1:
        raise InputError("--frames must be at least 1")
    methods = build_methods(
        anchor_names,
        qps=qps,
        presets=presets,
        weights=weights,
        qualities=_int_list(qualities, "--qualities"),
        refinement=refinement,
        device=device,
    )
    with local_workers(workers) as map_fn:
        report = evaluate_videos(
            list(videos),
            methods,
            out_dir,
            metrics=metric_names,
            reference=reference,
            max_frames=max_frames,
            device=device,
            clip_path=clip_weights,
            map_fn=map_fn,
            visuals=not no_visuals,
            point_cache=None if no_cache else PointCache(),
        )
    ref = report["reference"]
    if ref:
        click.echo(f"BD-rate against {ref} (mean over {len(report['videos'])} sequence(s)):")
        for method, per_metric in report["bd_rate"][ref].items():
            cells = []
            for m, r in per_metric.items():
                v = r["mean"]["value"]
                cells.append(f"{m} {'n/a' if v is None else f'{v:+.1f}%'}")
            click.echo(f"  {method:<12} " + "  ".join(cells))
    for e in report["errors"]:
        click.echo(f"failed: {e['video']} {e['method']} {e['label']}: {e['error']}", err=True)
    status(f"report: {os.path.join(out_dir, 'report.md')}")
