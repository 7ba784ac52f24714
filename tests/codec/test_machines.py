"""Streams decode to the same latents on other machines (emulated), and to frames within ±1 level.

Every setup of :mod:`tests.codec.machines` decodes, in its own process:
- the golden streams under tests/data/golden (encoded once, in the default setup, and committed),
  against the hashes in expected.json — format drift or machine dependence both fail here;
- fresh streams the tiny model encodes now, in this process (the default setup), at small and
  odd sizes and three quality indices (v1 failed on 64×48, 96×80 and 128×96 with one thread).
"""

from __future__ import annotations

import pytest

from .machines import SETUPS, build_jobs, compare, decode_in_setup


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, tiny_model, tiny_model_dir) -> tuple[dict, dict]:
    return build_jobs(tmp_path_factory.mktemp("machines"), tiny_model, tiny_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_other_machine_decodes_identical_latents(setup, jobs):
    job, expected = jobs
    rows = compare(decode_in_setup(setup, job), expected)
    lines = [f"  {r['stream']:24s} decoded={r['decoded']} latents_equal={r['latents_equal']} "
             f"max|Δpixel|={r['max_pixel_diff']} {r['error']}" for r in rows]  # fmt: skip
    print(f"\n{setup}:\n" + "\n".join(lines))
    assert all(r["decoded"] for r in rows), [r for r in rows if not r["decoded"]]
    assert all(r["latents_equal"] for r in rows), [r["stream"] for r in rows if not r["latents_equal"]]
    # The VAE decoder is float arithmetic: another machine may move a pixel by one level, no more.
    # TF32 rounds every conv input to 11 significant bits, a far larger change than any CPU kernel
    # set; the gnvc decoder turns TF32 off on CUDA for that reason, and with it on, the golden
    # micro-VAE (random weights) was measured at 2 levels: allowed here, and nothing more.
    tolerance = 2 if "TF32" in setup else 1
    worst = max(r["max_pixel_diff"] for r in rows)
    assert worst <= tolerance, [(r["stream"], r["max_pixel_diff"]) for r in rows if r["max_pixel_diff"] > tolerance]
