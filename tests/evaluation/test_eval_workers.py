"""``gnvc eval --workers 2`` finishes (a spawned pool: a fork after torch's thread pools start can
deadlock) and reports exactly what one worker reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from gnvc.io.video import Video, write_video
from gnvc.models.model_dir import GnvcModel


def _points(report: dict) -> object:
    def strip(d: object) -> object:  # timings differ run to run; everything else must not
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not any(s in k for s in ("seconds", "wall", "time", "_s"))}
        if isinstance(d, list):
            return [strip(x) for x in d]
        return d

    return strip(report["points"])


def test_eval_with_two_workers_matches_one(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (144, 176, 3))
    clip = tmp_path / "c.y4m"
    write_video(clip, Video(np.stack([np.roll(base, 2 * t, 1) for t in range(5)]).astype(np.uint8), 25))
    GnvcModel.from_profile("tiny", seed=0).save_pretrained(tmp_path / "m")
    reports = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        cmd = [sys.executable, "-m", "gnvc", "eval", str(clip), "--weights", str(tmp_path / "m"), "--qualities",
               "0,1", "--anchors", "x264", "--workers", str(workers), "-o", str(out), "--no-visuals",
               "--metrics", "psnr_rgb"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports[workers] = json.loads((out / "report.json").read_text())
    assert _points(reports[1]) == _points(reports[2])
