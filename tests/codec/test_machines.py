"""Streams decode to the same latents on other machines (emulated), and to frames within ±1 level.

Every setup of :mod:`tests.codec.machines` decodes, in its own process:
- the golden streams under tests/data/golden (encoded once, in the default setup, and committed),
  against the hashes in expected.json — format drift or machine dependence both fail here;
- fresh streams the tiny model encodes now, in this process (the default setup), at small and
  odd sizes and three quality indices (v1 failed on 64×48, 96×80 and 128×96 with one thread).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gnvc.videocodec import encode_video

from .conftest import random_video
from .machines import SETUPS, decode_in_setup

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
SIZES = [(64, 48), (96, 80), (128, 96), (33, 17)]
QUALITIES = [0, 3, 5]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, tiny_model, tiny_model_dir) -> tuple[dict, dict]:
    """{name: (model_dir, stream)} and the expected {name: (latents_sha256, frames)} of each."""
    root = tmp_path_factory.mktemp("machines")
    expected_golden = json.loads((GOLDEN / "expected.json").read_text())
    jobs, expected = {}, {}
    for name, exp in expected_golden.items():
        stream = root / f"golden_{name}.gnvc"
        shutil.copyfile(GOLDEN / f"{name}.gnvc", stream)
        jobs[f"golden {name}"] = (str(GOLDEN / "model"), str(stream))
        expected[f"golden {name}"] = (exp["latents_sha256"], np.load(GOLDEN / f"{name}.frames.npz")["frames"])
    import io

    from gnvc.videocodec import decode_stream

    for w, h in SIZES:
        for q in QUALITIES:
            data = encode_video(tiny_model, random_video(9, h, w, seed=w + q), q).data
            stream = root / f"fresh_{w}x{h}_q{q}.gnvc"
            stream.write_bytes(data)
            frames: list[np.ndarray] = []
            res = decode_stream(tiny_model, io.BytesIO(data), frames.append, steps=0)
            jobs[f"fresh {w}x{h} q{q}"] = (str(tiny_model_dir), str(stream))
            expected[f"fresh {w}x{h} q{q}"] = (res.latents_sha256, np.stack(frames))
    return jobs, expected


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_other_machine_decodes_identical_latents(setup, jobs):
    job, expected = jobs
    results = decode_in_setup(setup, job)
    rows = []
    for name, (latents_sha, frames) in expected.items():
        r = results[name]
        ok = r["ok"] and r["latents_sha256"] == latents_sha
        diff = int(np.abs(np.load(r["frames"]).astype(int) - frames.astype(int)).max()) if r["ok"] else None
        rows.append((name, r["ok"], ok, diff, r.get("error", "")))
    lines = [f"  {n:24s} decoded={d} latents_equal={e} max|Δpixel|={x} {err}" for n, d, e, x, err in rows]
    print(f"\n{setup}:\n" + "\n".join(lines))
    assert all(r[1] for r in rows), [r for r in rows if not r[1]]
    assert all(r[2] for r in rows), [r[0] for r in rows if not r[2]]
    # The VAE decoder is float arithmetic: another machine may move a pixel by one level, no more.
    # TF32 rounds every conv input to 11 significant bits, a far larger change than any CPU kernel
    # set; the gnvc decoder turns TF32 off on CUDA for that reason, and with it on, the golden
    # micro-VAE (random weights) was measured at 2 levels: allowed here, and nothing more.
    tolerance = 2 if "TF32" in setup else 1
    assert max(r[3] for r in rows) <= tolerance, [(r[0], r[3]) for r in rows if r[3] > tolerance]
