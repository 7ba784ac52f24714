"""Anchor rate points kept in gnvc's cache, so re-evaluating a model does not re-run VVC & co.

An anchor's point (a conventional codec at one QP on one video, and the metrics of its decoded
frames) depends on the video, the encoder and its options, the metrics and the versions of
everything that computes them — not on gnvc's model. On the base release's held-out clips the
anchors are about half of an evaluation's time (16 points per clip, ≈ 25 s of metrics each on
this CPU), and they came out the same every time the model changed. A point is stored under a
SHA-256 of all of those inputs (:func:`anchor_key`), in ``<gnvc cache>/eval-points/``; any
change (another ffmpeg build, another torch, another preset, other frames) is another key, so a
stale point is never reused. gnvc's own points and the originals are never cached.

Files are JSON (PNG visuals base64-encoded), written to a temporary file and renamed; a file
that does not parse is a miss and is rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_VERSION = 1


def anchor_key(job: Any, env: dict[str, Any]) -> str | None:
    """The cache key of an :class:`~gnvc.evaluation.evaluate.EvalJob`, or None when it is not cacheable."""
    method = job.method
    if method is None or getattr(method, "kind", None) != "anchor":
        return None
    v = job.video
    frames = hashlib.sha256(v.frames.tobytes()).hexdigest()
    spec = {
        "version": CACHE_VERSION,
        "video": {"sha256": frames, "shape": list(v.frames.shape), "dtype": str(v.frames.dtype), "fps": float(v.fps)},
        # The method minus its list of QPs: adding a QP to a sweep keeps the other points.
        "method": {k: v for k, v in method.describe().items() if k != "qps"},
        "point": {"label": job.point.label, "value": job.point.value},
        "metrics": list(job.metrics),
        "clip_path": job.clip_path,
        "device": job.device,
        "visuals": bool(job.visuals),
        "environment": env,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


class PointCache:
    """Anchor results by :func:`anchor_key`, under ``root`` (default: gnvc's cache, ``eval-points/``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from gnvc.metrics.weights import cache_dir

            root = cache_dir() / "eval-points"
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str, video_name: str) -> dict | None:
        """The stored result, relabelled for ``video_name`` (the same frames may carry another name)."""
        try:
            data = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("result"), dict):
            return None
        result = data["result"]
        if "visuals" in result:
            result["visuals"] = {k: base64.b64decode(b) for k, b in result["visuals"].items()}
        result["video"] = video_name
        return result

    def put(self, key: str, result: dict) -> None:
        """Store a successful result (errors are not cached: a missing encoder may be installed later)."""
        if "error" in result:
            return
        stored = dict(result)
        if "visuals" in stored:
            stored["visuals"] = {k: base64.b64encode(b).decode() for k, b in stored["visuals"].items()}
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "result": stored}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
