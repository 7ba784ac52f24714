"""``gnvc metrics`` and ``gnvc eval`` through click, as a user runs them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gnvc.cli.evaluate import evaluate, metrics
from gnvc.errors import InputError
from gnvc.io.video import Video, write_video


@pytest.fixture(scope="module")
def clips(carphone, tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    ref = Video(carphone.frames[:3], carphone.fps)
    dist = Video((carphone.frames[:3] // 8) * 8, carphone.fps)  # posterised: a visible, known-direction loss
    write_video(d / "ref.y4m", ref)
    write_video(d / "dist.y4m", dist)
    return d


def test_metrics_command_prints_and_writes_json(clips):
    out = clips / "m.json"
    r = CliRunner().invoke(
        metrics,
        [
            str(clips / "ref.y4m"),
            str(clips / "dist.y4m"),
            "--json",
            str(out),
            "--metrics",
            "psnr_rgb,psnr_y,msssim,ewarp",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "PSNR-Y (BT.709)" in r.output and "E_warp" in r.output
    data = json.loads(out.read_text())
    assert data["frames"] == 3 and len(data["per_frame"]["psnr_y"]) == 3
    assert 25 < data["mean"]["psnr_rgb"] < 45


def test_eval_command_anchors_only(clips, tmp_path):
    r = CliRunner().invoke(
        evaluate,
        [
            str(clips / "ref.y4m"),
            "--anchors",
            "x264,x265",
            "--qp",
            "x264=26,34,42",
            "--qp",
            "x265=26,34,42",
            "--preset",
            "x265=fast",
            "--frames",
            "2",
            "--metrics",
            "psnr_y,msssim",
            "--no-visuals",
            "-o",
            str(tmp_path / "rep"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "BD-rate against x264" in r.output and "x265" in r.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [p["label"] for p in report["points"]["ref"]["x264"]] == ["qp42", "qp34", "qp26"]  # sorted by rate
    assert report["videos"]["ref"]["frames"] == 2


@pytest.mark.parametrize(
    "args,match",
    [
        (["--anchors", "mpeg2"], "unknown anchor"),
        (["--anchors", "x264", "--qp", "x265=30"], "not in --anchors"),
        (["--anchors", "x264", "--qp", "x264=3x"], "integers"),
        (["--anchors", "none"], "nothing to evaluate"),
    ],
)
def test_eval_command_errors_are_input_errors(clips, tmp_path, args, match):
    r = CliRunner().invoke(evaluate, [str(clips / "ref.y4m"), *args, "-o", str(tmp_path / "x")])
    assert isinstance(r.exception, InputError) and match in str(r.exception)
