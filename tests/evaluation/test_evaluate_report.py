"""evaluate_videos end to end on a real clip: anchors, a non-anchor method, fan-out, report."""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from gnvc.errors import GnvcError, InputError
from gnvc.evaluation import AnchorMethod, evaluate_videos
from gnvc.evaluation.methods import Coded, RatePoint, build_methods
from gnvc.io.video import Video
from gnvc.metrics.compute import DEFAULT_METRICS, METRICS


@dataclass
class JpegMethod:
    """A real (intra-only) codec standing in for gnvc: Pillow's JPEG, every byte of every frame counted."""

    qualities: tuple[int, ...] = (20, 50, 85)
    fail_on: int | None = None
    name: str = "jpeg"
    label: str = "JPEG (Pillow)"
    kind: str = "learned"

    def points(self) -> list[RatePoint]:
        return [RatePoint(f"q{q}", q) for q in self.qualities]

    def code(self, video: Video, point: RatePoint) -> Coded:
        from PIL import Image

        if point.value == self.fail_on:
            raise GnvcError(f"jpeg refuses quality {point.value}")
        chunks, frames = [], []
        for f in video.frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="JPEG", quality=point.value)
            chunks.append(buf.getvalue())
            frames.append(np.asarray(Image.open(io.BytesIO(chunks[-1])).convert("RGB")))
        return Coded(b"".join(chunks), Video(np.stack(frames), video.fps), 0.0, 0.0, {"quality": point.value})

    def describe(self) -> dict:
        return {"kind": self.kind, "qualities": list(self.qualities)}


def pickling_map(fn, jobs):
    """What a process/Ray fan-out does to each job and result: a pickle round trip."""
    calls = []
    for job in jobs:
        calls.append(job)
        yield pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(job)))))
    pickling_map.calls = calls


@pytest.fixture(scope="module")
def evaluated(carphone, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    video = Video(carphone.frames[:3], carphone.fps)
    methods = [
        AnchorMethod("x264", qps=(24, 32, 40, 48), preset="fast"),
        AnchorMethod("x265", qps=(24, 32, 40, 48), preset="fast"),
        JpegMethod(fail_on=None),
    ]
    report = evaluate_videos({"carphone": video}, methods, out, reference="x264", map_fn=pickling_map)
    return report, out, video


def test_every_job_went_through_map_fn(evaluated):
    report, _, _ = evaluated
    assert len(pickling_map.calls) == 1 + 4 + 4 + 3  # the original + every rate point
    assert report["reference"] == "x264"


def test_rates_are_the_exact_bytes(evaluated):
    report, _, video = evaluated
    pixels = video.num_frames * video.width * video.height
    for method, pts in report["points"]["carphone"].items():
        assert len(pts) == (3 if method == "jpeg" else 4)
        for p in pts:
            assert p["bits"] == 8 * p["bytes"] and p["bpp"] == pytest.approx(p["bits"] / pixels)
            assert len(p["sha256"]) == 64
            assert set(p["mean"]) == set(DEFAULT_METRICS)
            assert all(len(v) == 3 for v in p["per_frame"].values()) and len(p["per_pair"]["ewarp"]) == 2
        bpps = [p["bpp"] for p in pts]
        assert bpps == sorted(bpps)


def test_bd_rates_present_for_every_fidelity_metric(evaluated):
    report, _, _ = evaluated
    fidelity = [m for m in DEFAULT_METRICS if METRICS[m].fidelity]
    for ref in ("x264", "x265"):
        for method in report["bd_rate"][ref]:
            assert set(report["bd_rate"][ref][method]) == set(fidelity)
    x265 = report["bd_rate"]["x264"]["x265"]["psnr_y"]
    assert x265["mean"]["value"] is not None and x265["per_sequence"]["carphone"]["value"] == x265["mean"]["value"]
    assert "ewarp" not in report["bd_rate"]["x264"]["x265"]  # consistency metrics get no BD-rate
    assert report["originals"]["carphone"]["mean"]["ewarp"] is not None


def test_report_files_name_every_method_and_metric(evaluated):
    report, out, _ = evaluated
    md = (out / "report.md").read_text()
    for name in ("x264", "x265", "jpeg", "AVC (x264)", "HEVC (x265)", "JPEG (Pillow)"):
        assert name in md
    for m in DEFAULT_METRICS:
        assert METRICS[m].label in md
    assert json.loads((out / "report.json").read_text())["bd_rate"].keys() == report["bd_rate"].keys()
    for kind in ("rd", "frames", "slices"):
        rel = report["figures"]["carphone"][kind]
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rel in md
    # The pictures show the anchors near the rate of the method under test.
    assert report["visual_points"]["carphone"]["target_bpp"] > 0


def test_failed_point_is_reported_not_fatal(carphone, tmp_path):
    video = Video(carphone.frames[:2], carphone.fps)
    report = evaluate_videos(
        [("clip", video)],
        [JpegMethod(qualities=(30, 60, 90), fail_on=60), "x264"],
        tmp_path,
        metrics=["psnr_y"],
        visuals=False,
    )
    assert [e["label"] for e in report["errors"]] == ["q60"]
    assert len(report["points"]["clip"]["jpeg"]) == 2
    assert "jpeg refuses quality 60" in (tmp_path / "report.md").read_text()


def test_bad_requests(carphone):
    v = Video(carphone.frames[:2], carphone.fps)
    with pytest.raises(InputError, match="not among the methods"):
        evaluate_videos([v], ["x264"], None, reference="vvc", metrics=["psnr_y"])
    with pytest.raises(InputError, match="listed twice|unique"):
        evaluate_videos([v], ["x264", "avc"], None, metrics=["psnr_y"])
    with pytest.raises(InputError, match="nothing to evaluate"):
        build_methods([])
    with pytest.raises(InputError, match="refinement"):
        build_methods([], weights="models/tiny", refinement="maybe")


def test_several_sequences_get_a_mean_per_rate_point(carphone, tmp_path):
    videos = {
        "a": Video(carphone.frames[:2], carphone.fps),
        "b": Video(np.ascontiguousarray(carphone.frames[2:4, :, ::-1]), carphone.fps),
    }
    report = evaluate_videos(
        videos, [JpegMethod(qualities=(20, 85))], tmp_path, metrics=["psnr_rgb"], reference=None, visuals=False
    )
    (low, high) = report["mean_points"]["jpeg"]
    assert [low["label"], high["label"]] == ["q20", "q85"]
    for row in (low, high):
        per_video = [next(p for p in report["points"][v]["jpeg"] if p["label"] == row["label"]) for v in videos]
        assert row["bpp"] == pytest.approx(np.mean([p["bpp"] for p in per_video]))
        assert row["mean"]["psnr_rgb"] == pytest.approx(np.mean([p["mean"]["psnr_rgb"] for p in per_video]))
    assert (tmp_path / report["mean_figure"]).is_file()
    assert "## Mean over the 2 sequences" in (tmp_path / "report.md").read_text()
