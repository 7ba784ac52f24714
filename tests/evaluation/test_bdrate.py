"""BD-rate on synthetic curves whose answer is known in closed form.

pchip reproduces a straight line exactly, so curves that are linear in log-rate give exact BD-rates.
"""

from __future__ import annotations

import numpy as np
import pytest

from gnvc.evaluation.bdrate import BDResult, average_bd, bd_rate

RATES = np.array([0.01, 0.02, 0.04, 0.08, 0.16])
PSNR = 30 + 10 * np.log10(RATES / 0.01)  # +3.01 dB per doubling


def test_constant_rate_ratio():
    r = bd_rate(RATES, PSNR, RATES * 0.8, PSNR)
    assert r.value == pytest.approx(-20.0, abs=1e-9) and r.overlap == pytest.approx(1.0)


def test_quality_offset_on_log_linear_curve():
    """Test is 1 dB better at every rate: equal quality needs 10^(−1/10) of the rate."""
    r = bd_rate(RATES, PSNR, RATES, PSNR + 1.0)
    assert r.value == pytest.approx(100 * (10 ** (-0.1) - 1), abs=1e-9)  # −20.57 %
    assert 0 < r.overlap < 1  # integrated over the overlapping PSNR range only


def test_lower_is_better_metric_is_flipped():
    """LPIPS falling 0.05 per doubling; the test is 0.02 lower (better) at every rate:
    equal LPIPS needs 2^(−0.4) of the rate."""
    lpips = 0.5 - 0.05 * np.log2(RATES / 0.01)
    r = bd_rate(RATES, lpips, RATES, lpips - 0.02, higher_is_better=False)
    assert r.value == pytest.approx(100 * (2 ** (-0.4) - 1), abs=1e-9)  # −24.21 %
    worse = bd_rate(RATES, lpips, RATES * 1.25, lpips, higher_is_better=False)
    assert worse.value == pytest.approx(25.0, abs=1e-9)
    assert not r.notes  # with the flip both curves rise with rate, as BD routines assume


def test_unflipped_lower_is_better_metric_is_the_pitfall():
    """The package's interpolation assumes quality rising with rate: fed raw LPIPS it refuses
    (an assertion), which is why the wrapper negates lower-is-better metrics; and the wrapper flags
    a metric whose direction was declared wrong."""
    import bjontegaard

    lpips = 0.5 - 0.05 * np.log2(RATES / 0.01)
    with pytest.raises(AssertionError):
        bjontegaard.bd_rate(RATES, lpips, RATES, lpips - 0.02, method="pchip", require_matching_points=False)
    declared_wrong = bd_rate(RATES, lpips, RATES, lpips - 0.02, higher_is_better=True)
    assert any("not strictly increasing" in n for n in declared_wrong.notes)


def test_no_overlap_gives_reason():
    r = bd_rate(RATES, PSNR, RATES, PSNR + 30)
    assert r.value is None and "do not overlap" in r.reason and r.overlap == 0.0
    assert r.text().startswith("n/a (quality ranges do not overlap")


def test_partial_overlap_uses_overlap_only():
    r = bd_rate(RATES, PSNR, RATES[2:] * 0.5, PSNR[2:])
    assert r.value == pytest.approx(-50.0, abs=1e-9)
    assert r.overlap == pytest.approx(0.5)
    assert any("fewer than 4" in n for n in r.notes)


def test_degenerate_curves():
    assert bd_rate(RATES[:1], PSNR[:1], RATES, PSNR).value is None
    flat = bd_rate(RATES, PSNR, RATES, [31, 32, 32, 33, 34])
    assert flat.value is None and "same quality" in flat.reason
    dropped = bd_rate(RATES, PSNR, RATES * 0.8, [PSNR[0], None, PSNR[2], PSNR[3], float("nan")])
    assert dropped.value == pytest.approx(-20.0, abs=1e-9) and "dropped" in dropped.notes[0]


def test_average_is_over_sequences_not_pooled_points():
    """Per-sequence BD then mean: (−20 + 0)/2 = −10, whatever averaging the RD points would give."""
    seq_a = bd_rate(RATES, PSNR, RATES * 0.8, PSNR)
    seq_b = bd_rate(RATES * 3, PSNR - 5, RATES * 3, PSNR - 5)
    mean = average_bd({"a": seq_a, "b": seq_b})
    assert mean.value == pytest.approx(-10.0, abs=1e-9)
    missing = average_bd({"a": seq_a, "c": BDResult(None, "no overlap")})
    assert missing.value == pytest.approx(-20.0) and "n/a for c" in missing.notes[0]
    assert average_bd({"c": BDResult(None, "no overlap")}).value is None
