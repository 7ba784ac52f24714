"""The fixed-point arithmetic of the decoding loop is exact: it equals integer arithmetic done in int64."""

from __future__ import annotations

import numpy as np
import torch

from gnvc.codec import integer
from gnvc.codec.integer import ACT_LIMIT_BITS, MAX_FANIN_BITS, WEIGHT_BITS, Conv2d, conv_int, quantize_conv


def _int64_reference(conv: Conv2d, x: np.ndarray) -> np.ndarray:
    """The same convolution in numpy int64 (exact by construction), with the format's rounding."""
    w = conv.int_weight.numpy().astype(np.int64)
    b = conv.int_bias.numpy().astype(np.int64)
    shift = int(conv.int_shift)
    cout, cin, kh, kw = w.shape
    s, p = conv.stride[0], conv.padding[0]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, _, h, wd = xp.shape
    oh, ow = (h - kh) // s + 1, (wd - kw) // s + 1
    out = np.zeros((n, cout, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + s * oh : s, j : j + s * ow : s]
            out += np.einsum("oc,nchw->nohw", w[:, :, i, j], patch)
    out += b[None, :, None, None]
    out = (out + (1 << (shift - 1))) >> shift  # floor division by 2^shift after adding half
    limit = 1 << ACT_LIMIT_BITS
    return np.clip(out, -limit, limit)


def test_conv_int_equals_int64_arithmetic_even_at_the_extremes():
    torch.manual_seed(0)
    for stride in (1, 2):
        conv = Conv2d(48, 40, 3, stride=stride, padding=1)
        with torch.no_grad():
            conv.weight.mul_(30)  # large weights: the scale search must keep |W| < 2^15
        quantize_conv(conv)
        assert conv.int_weight.abs().max() < 2**WEIGHT_BITS
        rng = np.random.default_rng(stride)
        # Activations at the saturation bound: the largest partial sums the format allows.
        x = rng.integers(-(2**ACT_LIMIT_BITS), 2**ACT_LIMIT_BITS + 1, size=(1, 48, 9, 7)).astype(np.int64)
        got = conv_int(conv, torch.from_numpy(x).double()).numpy().astype(np.int64)
        assert np.array_equal(got, _int64_reference(conv, x))


def test_partial_sums_stay_exact_in_float64():
    assert ACT_LIMIT_BITS + WEIGHT_BITS + MAX_FANIN_BITS < 53


def test_leaky_relu_int_is_the_float_slope_with_floor():
    x = torch.arange(-50, 50, dtype=torch.float64)
    y = integer.leaky_relu_int(x)
    assert torch.equal(y, torch.where(x < 0, torch.floor(x / 8), x))
    assert integer.LEAKY_SLOPE == 1 / 8


def test_round_shift_rounds_half_up():
    x = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert integer.round_shift(x, 1).tolist() == [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 2.0]
