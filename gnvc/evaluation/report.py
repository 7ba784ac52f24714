"""Writes the evaluation report: ``report.json`` (everything, machine-readable), ``report.md`` (tables,
RD curves, side-by-side frames, spatio-temporal slices) and the PNG figures it links.

Markdown keeps the report readable on any Git forge or in a terminal, and needs no JavaScript
from a CDN (DVC's HTML plots do, and nothing here can reach one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gnvc.evaluation.plots import rd_figure
from gnvc.evaluation.visuals import png_array, png_bytes, side_by_side, slices_figure
from gnvc.io.video import Video
from gnvc.metrics.compute import METRICS

FIGURES = "figures"


def _fmt(x: float | None, metric: str | None = None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if metric in ("psnr_rgb", "psnr_y"):
        return f"{x:.2f}"
    if metric == "ewarp":
        return f"{x:.3f}"
    return f"{x:.4f}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def pick_visual_points(
    per_video: dict[str, list[dict]], methods: dict[str, dict]
) -> tuple[float | None, dict[str, dict]]:
    """One rate point per method for the pictures: the one closest (in log-rate) to a common target.

    The target is the geometric mean of the rates of the methods under test (gnvc: anything not an
    anchor) when there are any — the pictures should show the anchors where gnvc operates — else
    of all rates.
    """
    tested = [p["bpp"] for m, pts in per_video.items() if methods.get(m, {}).get("kind") != "anchor" for p in pts]
    pool = tested or [p["bpp"] for pts in per_video.values() for p in pts]
    if not pool:
        return None, {}
    target = float(np.exp(np.mean(np.log(pool))))
    chosen = {m: min(pts, key=lambda p: abs(math.log(p["bpp"] / target))) for m, pts in per_video.items() if pts}
    return target, chosen


def _bd_table(table: dict, metrics: list[str], notes: list[str]) -> list[str]:
    fidelity = [m for m in metrics if METRICS[m].fidelity]
    lines = ["| method | " + " | ".join(METRICS[m].label for m in fidelity) + " |", "|---|" + "---|" * len(fidelity)]
    for method, per_metric in table.items():
        cells = []
        for m in fidelity:
            r = per_metric[m]["mean"]
            if r["value"] is not None:
                cells.append(f"{r['value']:+.1f} %")
            else:
                notes.append(r["reason"])
                cells.append(f"n/a [{len(notes)}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(
    report: dict, figures: dict[str, dict[str, str]], visual_points: dict[str, tuple[float | None, dict]]
) -> str:
    """The human-readable report."""
    metrics = report["metrics"]
    labels = {m: d.get("label", m) for m, d in report["methods"].items()}
    out = [
        f"# {report['title']}",
        "",
        f"Created {report['created']}; {len(report['videos'])} sequence(s), methods: "
        + ", ".join(f"**{m}** ({labels[m]})" for m in report["methods"])
        + ".",
        f"Metrics: {', '.join(METRICS[m].label for m in metrics)}. "
        f"BD-rate: Bjøntegaard delta rate, {report['bd_method']} interpolation (PyPI `bjontegaard` "
        f"{report['environment'].get('bjontegaard')}), overlapping quality range only, lower-is-better metrics "
        "negated, computed per sequence then averaged. Negative = fewer bits than the anchor at equal quality.",
        "Rate = every byte of the elementary stream / gnvc file (x264's encoder-info SEI stripped), as bits per pixel.",
        "",
    ]
    notes: list[str] = []
    for ref, table in report["bd_rate"].items():
        lead = "Summary: " if ref == report["reference"] else ""
        out += [f"## {lead}BD-rate against {ref} ({labels.get(ref, ref)}), mean over sequences", ""]
        out += _bd_table(table, metrics, notes) + [""]
    if notes:
        out += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    fid = [m for m in metrics if METRICS[m].fidelity]
    tmp = [m for m in metrics if not METRICS[m].fidelity]
    if report.get("mean_points"):
        out += [f"## Mean over the {len(report['videos'])} sequences, per rate point", ""]
        out += [f"![mean RD curves]({report['mean_figure']})", ""]
        cols = ["method", "point", "bpp"] + [METRICS[m].label for m in fid + tmp]
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for method, pts in report["mean_points"].items():
            for p in pts:
                vals = " | ".join(_fmt(p["mean"].get(m), m) for m in fid + tmp)
                out.append(f"| {method} | {p['label']} | {p['bpp']:.4f} | {vals} |")
        out.append("")
    for video, info in report["videos"].items():
        out += [
            f"## Sequence `{video}` — {info['width']}×{info['height']}, {info['frames']} frames, {info['fps']:.3f} fps",
            "",
        ]
        if video in figures and "rd" in figures[video]:
            out += [f"![RD curves for {video}]({figures[video]['rd']})", ""]
        cols = (
            ["method", "point", "bpp", "kbit/s", "bytes"] + [METRICS[m].label for m in fid + tmp] + ["enc s", "dec s"]
        )
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        orig = report["originals"].get(video, {}).get("mean", {})
        if orig:
            out.append(
                "| original | – | – | – | – | "
                + " | ".join("–" for _ in fid)
                + "".join(f" | {_fmt(orig.get(m), m)}" for m in tmp)
                + " | – | – |"
            )
        for method, pts in report["points"][video].items():
            for p in pts:
                kbps = "–" if p.get("kbps") is None else f"{p['kbps']:.1f}"
                vals = " | ".join(_fmt(p["mean"].get(m), m) for m in fid + tmp)
                out.append(
                    f"| {method} | {p['label']} | {p['bpp']:.4f} | {kbps} | {p['bytes']} | {vals} | "
                    f"{p['encode_seconds']:.2f} | {p['decode_seconds']:.2f} |"
                )
        out.append("")
        if report["reference"]:
            per_seq = [
                "| method vs " + report["reference"] + " | " + " | ".join(METRICS[m].label for m in fid) + " |",
                "|---|" + "---|" * len(fid),
            ]
            for method, per_metric in report["bd_rate"].get(report["reference"], {}).items():
                cells = []
                for m in fid:
                    r = per_metric[m]["per_sequence"].get(video)
                    cells.append(
                        "–"
                        if r is None
                        else (f"{r['value']:+.1f} %" if r["value"] is not None else f"n/a ({r['reason']})")
                    )
                per_seq.append(f"| {method} | " + " | ".join(cells) + " |")
            out += ["BD-rate on this sequence:", ""] + per_seq + [""]
        target, chosen = visual_points.get(video, (None, {}))
        if video in figures and "frames" in figures[video]:
            shown = ", ".join(f"{m} {p['label']} ({p['bpp']:.4f} bpp)" for m, p in chosen.items())
            out += [
                f"### Frames (middle frame; points nearest {target:.4f} bpp: {shown})",
                "",
                f"![side by side]({figures[video]['frames']})",
                "",
            ]
        if video in figures and "slices" in figures[video]:
            out += [
                f"### Spatio-temporal slice (row {info['height'] // 2} over time, time going down)",
                "",
                "Horizontal streaks are flicker or temporal noise; smooth motion draws clean lines.",
                "",
                f"![slices]({figures[video]['slices']})",
                "",
            ]
    if report["errors"]:
        out += (
            ["## Failed rate points", ""]
            + [f"- {e['video']} / {e['method']} {e['label']}: {e['error']}" for e in report["errors"]]
            + [""]
        )
    out += ["## Methods and settings", ""]
    for m, d in report["methods"].items():
        details = ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("label", "options"))
        out.append(f"- **{m}** ({d.get('label', m)}): {details}")
        if d.get("options"):
            out.append(f"  - FFmpeg options (QP shown as 0): `{' '.join(map(str, d['options']))}`")
    out += ["", "## Metrics", ""]
    first = next((p for per in report["points"].values() for pts in per.values() for p in pts), None)
    for m in metrics:
        extra = (first or {}).get("metric_info", {}).get(m, {})
        details = ", ".join(f"{k}={v}" for k, v in extra.items() if k not in ("label", "higher_is_better", "temporal"))
        direction = "higher is better" if METRICS[m].higher_is_better else "lower is better"
        out.append(
            f"- **{METRICS[m].label}** (`{m}`, {direction}{', per frame pair' if METRICS[m].temporal else ''})"
            + (f": {details}" if details else "")
        )
    out += ["", "See docs/evaluation.md for the definitions.", "", "## Environment", ""]
    out += [f"- {k}: {v}" for k, v in report["environment"].items()] + [""]
    return "\n".join(out)


def mean_points(points: dict[str, dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Per method, each rate point (a QP, a quality index) averaged over the sequences: bpp and every
    metric's mean, for the labels every sequence has. The overview a reader looks at first; BD-rates
    stay per sequence (then averaged), as averaging rates across contents distorts curve shapes."""
    videos = list(points)
    out: dict[str, list[dict]] = {}
    for method in dict.fromkeys(m for per in points.values() for m in per):
        by_label = [{p["label"]: p for p in points[v].get(method, [])} for v in videos]
        rows = []
        for label in [x for x in by_label[0] if all(x in d for d in by_label)]:
            ps = [d[label] for d in by_label]
            mean = {}
            for m in ps[0]["mean"]:
                vals = [q["mean"].get(m) for q in ps]
                mean[m] = None if any(v is None for v in vals) else float(np.mean(vals))
            rows.append({"label": label, "bpp": float(np.mean([q["bpp"] for q in ps])), "mean": mean})
        if rows:
            out[method] = rows
    return out


def write_report(
    report: dict,
    points: dict[str, dict[str, list[dict]]],
    originals: dict[str, dict],
    out_dir: Path,
    videos: dict[str, Video],
) -> Path:
    """Write figures, ``report.json`` and ``report.md`` under ``out_dir``; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FIGURES).mkdir(exist_ok=True)
    metrics = report["metrics"]
    labels = {m: d.get("label", m) for m, d in report["methods"].items()}
    figures: dict[str, dict[str, str]] = {}
    visual_points: dict[str, tuple[float | None, dict]] = {}
    for video, per_video in points.items():
        figs: dict[str, str] = {}
        name = _safe(video)
        if any(per_video.values()):
            rel = f"{FIGURES}/rd_{name}.png"
            rd_figure(video, per_video, metrics, out_dir / rel, labels, originals.get(video, {}).get("mean"))
            figs["rd"] = rel
        target, chosen = pick_visual_points(per_video, report["methods"])
        visual_points[video] = (target, chosen)
        orig = originals.get(video, {}).get("visuals")
        if orig and all("visuals" in p for p in chosen.values()):
            frames = [("original", png_array(orig["frame"]))]
            frames += [(f"{m} {p['bpp']:.3f} bpp", png_array(p["visuals"]["frame"])) for m, p in chosen.items()]
            rel = f"{FIGURES}/frames_{name}.png"
            (out_dir / rel).write_bytes(png_bytes(side_by_side(frames)))
            figs["frames"] = rel
            slices = [("original", png_array(orig["slice"]))]
            slices += [(f"{m} {p['bpp']:.3f} bpp", png_array(p["visuals"]["slice"])) for m, p in chosen.items()]
            rel = f"{FIGURES}/slices_{name}.png"
            (out_dir / rel).write_bytes(png_bytes(slices_figure(slices)))
            figs["slices"] = rel
        figures[video] = figs
    if len(points) > 1:
        report["mean_points"] = mean_points(points)
        base = {}
        for m in metrics:
            vals = [originals.get(v, {}).get("mean", {}).get(m) for v in points]
            base[m] = None if any(x is None for x in vals) else float(np.mean(vals))
        rel = f"{FIGURES}/rd_mean.png"
        rd_figure(f"mean over {len(points)} sequences", report["mean_points"], metrics, out_dir / rel, labels, base)
        report["mean_figure"] = rel
    report["figures"] = figures
    report["visual_points"] = {
        v: {"target_bpp": t, "points": {m: p["label"] for m, p in c.items()}} for v, (t, c) in visual_points.items()
    }
    (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=1, allow_nan=False))
    md = out_dir / "report.md"
    md.write_text(markdown(report, figures, visual_points))
    return md


def json_safe(o):
    """Plain JSON values: NaN/inf become null (strict JSON has no NaN), numpy scalars and paths unwrapped."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [json_safe(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, bytes):
        return o.hex()
    return o
