"""Anchor points reused from gnvc's cache (gnvc.evaluation.point_cache): same inputs only, never errors."""

from __future__ import annotations

import numpy as np

from gnvc.evaluation import AnchorMethod, evaluate_videos
from gnvc.evaluation.point_cache import PointCache
from gnvc.io.video import Video

from .test_evaluate_report import JpegMethod


def _recording_map(fn, jobs):
    jobs = list(jobs)
    _recording_map.ran = [(j.method.name if j.method else "original", j.point.label if j.point else None) for j in jobs]
    return [fn(j) for j in jobs]


def _points(report, video="clip"):
    return {(m, p["label"]): p for m, pts in report["points"][video].items() for p in pts}


def test_anchor_points_come_back_from_the_cache_and_only_they(carphone, tmp_path):
    video = Video(carphone.frames[:2], carphone.fps)
    cache = PointCache(tmp_path / "cache")
    kw = {"metrics": ["psnr_rgb", "lpips_alex"], "reference": None, "map_fn": _recording_map, "point_cache": cache}
    methods = [AnchorMethod("x264", qps=(30, 40), preset="fast"), JpegMethod(qualities=(50,))]
    first = evaluate_videos({"clip": video}, methods, tmp_path / "r1", **kw)
    assert first["cached_points"] == 0
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2  # the anchor's two points, not JPEG's

    second = evaluate_videos({"clip": video}, methods, tmp_path / "r2", **kw)
    assert second["cached_points"] == 2
    assert sorted(_recording_map.ran) == [("jpeg", "q50"), ("original", None)]  # x264 did not run again
    a, b = _points(first), _points(second)
    assert a.keys() == b.keys()
    for k in a:
        assert b[k]["bpp"] == a[k]["bpp"] and b[k]["sha256"] == a[k]["sha256"]
        assert b[k]["mean"] == a[k]["mean"]
    assert (tmp_path / "r2" / "report.md").is_file()

    # Another QP, other frames or another metric set: computed, not taken from the cache.
    evaluate_videos({"clip": video}, [AnchorMethod("x264", qps=(30, 35), preset="fast")], None, **kw)
    assert _recording_map.ran == [("original", None), ("x264", "qp35")]
    other = Video(np.ascontiguousarray(carphone.frames[1:3]), carphone.fps)
    evaluate_videos({"clip": other}, [AnchorMethod("x264", qps=(30,), preset="fast")], None, **kw)
    assert ("x264", "qp30") in _recording_map.ran
    evaluate_videos(
        {"clip": video}, [AnchorMethod("x264", qps=(30,), preset="fast")], None, **{**kw, "metrics": ["psnr_rgb"]}
    )
    assert ("x264", "qp30") in _recording_map.ran


def test_a_damaged_entry_is_recomputed_and_errors_are_not_stored(carphone, tmp_path):
    video = Video(carphone.frames[:2], carphone.fps)
    cache = PointCache(tmp_path / "cache")
    kw = {"metrics": ["psnr_rgb"], "reference": None, "map_fn": _recording_map, "point_cache": cache, "visuals": False}
    evaluate_videos({"clip": video}, [AnchorMethod("x264", qps=(30,), preset="fast")], None, **kw)
    (entry,) = (tmp_path / "cache").rglob("*.json")
    entry.write_text(entry.read_text()[:40])
    report = evaluate_videos({"clip": video}, [AnchorMethod("x264", qps=(30,), preset="fast")], None, **kw)
    assert report["cached_points"] == 0 and ("x264", "qp30") in _recording_map.ran
    assert entry.read_text().startswith('{"key"')  # rewritten whole

    cache.put("ab" * 32, {"video": "clip", "error": "encoder missing"})
    assert cache.get("ab" * 32, "clip") is None
