"""Exact fixed-point arithmetic for the decoding loop: the same numbers on every machine.

Why: every value the decoder derives from the bitstream and feeds into later symbols (hyper
synthesis, latent synthesis, temporal context, entropy parameters, scale index, mean) must be
bit-identical on the encoder and on any decoder, whatever the CPU kernels, thread count or device.
Float convolutions promise no such thing (a 1e-8 difference flips a CDF index), so the decoding
loop runs on integers (integer networks, Ballé et al. ICLR 2019; DCVC-RT's int16 integerisation).

How: activations are integers X standing for x = X·2^-ACT_BITS. A convolution's weights are
integers W = round(w·2^b) with a per-layer power-of-two scale b (chosen so |W| < 2^WEIGHT_BITS)
and its bias B = round(bias·2^(ACT_BITS+b)). The convolution sums integer products in float64,
which is exact (and so independent of summation order, blocking, threads and device) while every
partial sum stays below 2^53; the bounds below guarantee it: |X| ≤ 2^ACT_LIMIT_BITS after every
layer (saturation, a rule of the format), |W| < 2^WEIGHT_BITS, fan-in < 2^MAX_FANIN_BITS. The
result is brought back to 2^-ACT_BITS by a rounding fixed by the format: floor((Y + 2^(b−1))/2^b)
(division by a power of two and floor are exact in float64). Convolutions are computed as
``unfold`` + matrix product, never through a convolution kernel that could pick a Winograd/FFT
algorithm whose intermediate values are not integers.

The integer weights are computed once by ``quantize_conv`` (when the model's ``update()`` runs)
and shipped in the state dict as int32/int64 buffers, exactly like CompressAI's CDF tables: a
decoder never derives them from float weights itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACT_BITS = 10  # fractional bits of every integer activation: x = X / 1024
ACT_LIMIT_BITS = 22  # |X| ≤ 2^22 (|x| ≤ 4096) after every layer; saturating
WEIGHT_BITS = 15  # |W| < 2^15
MAX_FANIN_BITS = 14  # kernel area × input channels < 16384: sums stay below 2^(22+15+14) = 2^51 < 2^53
LEAKY_SHIFT = 3  # LeakyReLU slope 1/8: exact in fixed point as floor(X / 8)
LEAKY_SLOPE = 1.0 / (1 << LEAKY_SHIFT)
ACT_LIMIT = float(1 << ACT_LIMIT_BITS)
ONE = float(1 << ACT_BITS)


def saturate(x: torch.Tensor) -> torch.Tensor:
    """Clamp integer activations (float64) to the format's range: bounds every later partial sum."""
    return x.clamp_(-ACT_LIMIT, ACT_LIMIT)


def round_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """floor((x + 2^(shift−1)) / 2^shift): round half up, exact on integer-valued float64."""
    if shift <= 0:
        return x * float(1 << -shift)
    return torch.floor((x + float(1 << (shift - 1))) / float(1 << shift))


def to_fixed(x: torch.Tensor) -> torch.Tensor:
    """Float → integer activations (float64 holding integers); only for encoder-side inputs."""
    return saturate(torch.round(x.double() * ONE))


def from_fixed(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer activations → float values; exact in float32 because |X| ≤ 2^22 < 2^24."""
    return (x / ONE).to(dtype)


def leaky_relu_int(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU with slope 2^-LEAKY_SHIFT on integer activations: negative X → floor(X / 2^k)."""
    return torch.where(x < 0, torch.floor(x / float(1 << LEAKY_SHIFT)), x)


class LeakyReLU(nn.LeakyReLU):
    """The float twin of :func:`leaky_relu_int` (slope 1/8, a power of two, so the two agree)."""

    def __init__(self) -> None:
        super().__init__(LEAKY_SLOPE, inplace=True)


def quantize_conv(conv: nn.Conv2d) -> None:
    """Compute and store the integer weight/bias/shift buffers of ``conv`` (call from ``update()``)."""
    w = conv.weight.detach().double().cpu()
    fan_in = w[0].numel()
    if fan_in >= 1 << MAX_FANIN_BITS:
        raise ValueError(f"fan-in {fan_in} exceeds the integer format's 2^{MAX_FANIN_BITS}")
    peak = float(w.abs().max())
    # The largest power-of-two scale keeping |W| < 2^WEIGHT_BITS.
    b = WEIGHT_BITS - 1
    while b > 0 and peak * (1 << b) >= (1 << WEIGHT_BITS) - 1:
        b -= 1
    wq = torch.round(w * float(1 << b)).to(torch.int32)
    bias = conv.bias.detach().double().cpu() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    bq = torch.round(bias * float(1 << (ACT_BITS + b))).to(torch.int64)
    dev = conv.weight.device
    conv.int_weight = wq.to(dev)
    conv.int_bias = bq.to(dev)
    conv.int_shift = torch.tensor(b, dtype=torch.int32, device=dev)


def conv_int(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` applied to integer activations x (B, C, H, W, float64), exactly; saturated output."""
    if conv.int_weight.numel() == 0:
        raise RuntimeError("integer weights missing: run the codec's update() before coding")
    w = conv.int_weight.to(device=x.device, dtype=torch.float64)
    cout, cin, kh, kw = w.shape
    sh, sw = conv.stride
    ph, pw = conv.padding
    b, _, h, wd = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (B, Cin·kh·kw, L): a gather, exact
    y = torch.matmul(w.reshape(cout, -1), cols)  # integer products, exact partial sums in float64
    y = y + conv.int_bias.to(device=x.device, dtype=torch.float64)[None, :, None]
    y = round_shift(y, int(conv.int_shift))
    return saturate(y.reshape(b, cout, oh, ow))


class Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that also carries its integer twin (buffers filled by :func:`quantize_conv`)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - nn.Conv2d's signature
        super().__init__(*args, **kwargs)
        self.register_buffer("int_weight", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("int_bias", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("int_shift", torch.zeros((), dtype=torch.int32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # The integer buffers start empty; take the shipped ones at their real size.
        for name in ("int_weight", "int_bias"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_int(self, x: torch.Tensor) -> torch.Tensor:
        return conv_int(self, x)


def quantize_all(module: nn.Module) -> None:
    """Fill the integer buffers of every :class:`Conv2d` inside ``module``."""
    for m in module.modules():
        if isinstance(m, Conv2d):
            quantize_conv(m)


def has_integer_weights(module: nn.Module) -> bool:
    return all(m.int_weight.numel() > 0 for m in module.modules() if isinstance(m, Conv2d))


def sequential_int(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run an ``nn.Sequential`` of the integer-capable layers below on integer activations."""
    for layer in seq:
        x = run_int(layer, x)
    return x


def run_int(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Dispatch one layer's integer forward (convolutions, LeakyReLU, or a module with ``forward_int``)."""
    if isinstance(layer, nn.Sequential):
        return sequential_int(layer, x)
    if isinstance(layer, nn.LeakyReLU):
        if layer.negative_slope != LEAKY_SLOPE:
            raise TypeError(f"LeakyReLU slope {layer.negative_slope} has no exact integer form (use 1/8)")
        return leaky_relu_int(x)
    if hasattr(layer, "forward_int"):
        return layer.forward_int(x)
    raise TypeError(f"{type(layer).__name__} has no integer form")
