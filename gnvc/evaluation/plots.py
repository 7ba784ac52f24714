"""Rate–distortion curves as PNG files (matplotlib, Agg: no display, no CDN-hosted JavaScript)."""

from __future__ import annotations

import math
from pathlib import Path

from gnvc.metrics.compute import METRICS

MARKERS = "os^Dv<>ph*"


def rd_figure(
    video: str,
    points: dict[str, list[dict]],
    metrics: list[str],
    path: Path,
    labels: dict[str, str],
    baselines: dict[str, float | None] | None = None,
) -> Path:
    """One figure per sequence: a panel per metric, bpp (log) on x, one curve per method.

    ``baselines`` (the original video's own E_warp / CLIP-F) are drawn as dashed lines: for the
    temporal metrics the target is the source's value, not zero.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    n = len(metrics)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        spec = METRICS[metric]
        for i, (method, pts) in enumerate(points.items()):
            xy = sorted((p["bpp"], p["mean"].get(metric)) for p in pts if p["mean"].get(metric) is not None)
            if not xy:
                continue
            ax.plot(
                [x for x, _ in xy],
                [y for _, y in xy],
                marker=MARKERS[i % len(MARKERS)],
                ms=4,
                lw=1.2,
                label=labels.get(method, method),
            )
        base = (baselines or {}).get(metric)
        if base is not None:
            ax.axhline(base, ls="--", lw=1, color="0.4", label="original")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(spec.label + ("" if spec.higher_is_better else " (lower is better)"))
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, names = [], []
    for ax in axes.flat:  # the union of all panels' entries (the "original" line is on some only)
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    fig.suptitle(f"{video}: rate–distortion")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
