"""Bjøntegaard delta rate with the maintained ``bjontegaard`` package (piecewise cubic, pchip).

Conventions, each a pitfall peers' users reported:
- pchip interpolation of log-rate over quality (the package's pchip matches the JVET sheet);
- integration over the overlapping quality range only; no overlap → ``None`` with the reason;
- BD routines assume higher-is-better quality, so lower-is-better metrics (LPIPS, DISTS) are
  negated first — otherwise the sign of the result flips (or the interpolation refuses);
- computed per sequence, then averaged over sequences (never on RD points averaged first).
Negative values mean the test method needs fewer bits than the anchor for the same quality.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

BD_METHOD = "pchip"
JVET_POINTS = 4


@dataclass
class BDResult:
    """A BD-rate in percent, or ``None`` with the reason it cannot be computed."""

    value: float | None
    reason: str | None = None
    overlap: float | None = None  # overlapping fraction of the union of both quality ranges
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 1) -> str:
        return f"{self.value:+.{digits}f} %" if self.value is not None else f"n/a ({self.reason})"


def _clean(
    rate: Sequence[float], quality: Sequence[float | None], who: str, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    pts = [
        (float(r), float(q))
        for r, q in zip(rate, quality)
        if r is not None and q is not None and math.isfinite(float(r)) and math.isfinite(float(q)) and float(r) > 0
    ]
    if len(pts) < len(list(rate)):
        notes.append(f"{who}: {len(list(rate)) - len(pts)} point(s) without a finite rate/quality dropped")
    pts.sort()
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def bd_rate(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float | None],
    rate_test: Sequence[float],
    quality_test: Sequence[float | None],
    *,
    higher_is_better: bool = True,
    method: str = BD_METHOD,
) -> BDResult:
    """BD-rate (%) of test against anchor; quality may be lower-is-better (then it is negated)."""
    notes: list[str] = []
    ra, qa = _clean(rate_anchor, quality_anchor, "anchor", notes)
    rt, qt = _clean(rate_test, quality_test, "test", notes)
    if len(ra) < 2 or len(rt) < 2:
        return BDResult(None, f"needs at least 2 rate points per curve (anchor {len(ra)}, test {len(rt)})", notes=notes)
    if min(len(ra), len(rt)) < JVET_POINTS:
        notes.append(f"fewer than {JVET_POINTS} points on a curve")
    if not higher_is_better:
        qa, qt = -qa, -qt
    for who, q in (("anchor", qa), ("test", qt)):
        if np.any(np.diff(q) <= 0):
            notes.append(f"{who}: quality is not strictly increasing with rate; points ordered by quality")
    curves = []
    for who, r, q in (("anchor", ra, qa), ("test", rt, qt)):
        order = np.argsort(q, kind="stable")
        r, q = r[order], q[order]
        if np.any(np.diff(q) == 0):
            return BDResult(None, f"{who}: two rate points have the same quality", notes=notes)
        curves.append((r, q))
    (ra, qa), (rt, qt) = curves
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    union = max(qa.max(), qt.max()) - min(qa.min(), qt.min())
    if hi <= lo:
        sign = -1 if not higher_is_better else 1
        return BDResult(
            None,
            "quality ranges do not overlap "
            f"(anchor {sign * qa.min():.4g}..{sign * qa.max():.4g}, test {sign * qt.min():.4g}..{sign * qt.max():.4g})",
            overlap=0.0,
            notes=notes,
        )
    import bjontegaard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(ra, qa, rt, qt, method=method, require_matching_points=False, min_overlap=0.0)
    if not math.isfinite(value):
        return BDResult(None, "the interpolation did not give a finite value", overlap=(hi - lo) / union, notes=notes)
    return BDResult(float(value), None, overlap=float((hi - lo) / union), notes=notes)


def average_bd(per_sequence: dict[str, BDResult]) -> BDResult:
    """Mean of per-sequence BD-rates over the sequences where it is defined."""
    values = {k: r.value for k, r in per_sequence.items() if r.value is not None}
    missing = sorted(k for k, r in per_sequence.items() if r.value is None)
    notes = [f"n/a for {', '.join(missing)}"] if missing else []
    if not values:
        reasons = sorted({r.reason or "" for r in per_sequence.values()})
        return BDResult(None, "; ".join(reasons) or "no sequences", notes=notes)
    return BDResult(float(np.mean(list(values.values()))), None, notes=notes + [f"mean over {len(values)} sequence(s)"])
