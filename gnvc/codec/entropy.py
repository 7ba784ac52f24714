"""Hyperprior entropy coding of one latent frame, with gains and an optional temporal context.

This composes CompressAI's entropy models (a factorized ``EntropyBottleneck`` on z, a
``GaussianConditional`` on y) the way its ``HyperpriorLatentCodec`` does, adding what the video
codec needs:

- **Gains** (variable rate): y is multiplied by a learned per-channel gain of the quality index
  before quantisation and divided after, and the predicted (μ, σ) are scaled with it, so one model
  serves every rate point (as in DCVC-RT's quality-indexed scales).
- **Context**: the entropy parameters of a P-frame see the temporal context next to the
  hyperprior, which is where most of the inter-frame redundancy is removed.
- **An exact integer decoding path.** ``forward`` is the float training pass. ``compress`` and
  ``decompress`` derive everything that selects a CDF or a mean from the decoded symbols with
  the fixed-point arithmetic of :mod:`gnvc.codec.integer`: hyper synthesis and parameter head
  run as integer networks, the scale index is found by comparing the integer scale output with
  shipped integer thresholds (the inverse softplus of CompressAI's scale table, divided by the
  gain), the mean is an integer multiple of 1/16 computed with an integer gain, and the decoded
  ŷ is brought back to the fixed-point domain with an integer inverse gain. All of these tables
  are computed once by ``update_integer`` and shipped in the state dict.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from compressai.ops import quantize_ste
from torch import nn

from gnvc.codec.integer import (
    ACT_BITS,
    ACT_LIMIT_BITS,
    LeakyReLU,
    round_shift,
    saturate,
    sequential_int,
)
from gnvc.codec.layers import HyperAnalysis, HyperSynthesis, conv3x3, halve
from gnvc.codec.rans import rans_decode

NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]  # shape -> uniform noise in [-0.5, 0.5)


def _bottleneck_likelihood(eb: EntropyBottleneck, z_noisy: torch.Tensor) -> torch.Tensor:
    """What ``EntropyBottleneck.forward`` returns as likelihood for already-noised ``z_noisy``:
    its density is per channel, on values laid out (C, 1, B·h·w) and back."""
    b, c = z_noisy.shape[:2]
    values = z_noisy.transpose(0, 1).reshape(c, 1, -1)
    lik, _, _ = eb._likelihood(values)
    if eb.use_likelihood_bound:
        lik = eb.likelihood_lower_bound(lik)
    return lik.reshape(c, b, *z_noisy.shape[2:]).transpose(0, 1).contiguous()


MEAN_BITS = 4  # means are multiples of 1/16 (in the gained domain)
MEAN_GRID = float(1 << MEAN_BITS)
GAIN_BITS = 16  # integer gains: round(gain · 2^16)
SCALE_BOUND = 0.11
SYMBOL_LIMIT = float(1 << 26)  # |16·symbol + mean| is saturated here (a corrupt stream cannot overflow)
_INT_TABLES = ("int_gain", "int_gain_inv", "int_thresholds", "int_z_medians")


def snap_means(mu: torch.Tensor) -> torch.Tensor:
    """Means on the 1/16 grid (straight-through in training)."""
    return mu + (torch.round(mu * MEAN_GRID) / MEAN_GRID - mu).detach()


def softplus_inverse(v: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = v (float64, v > 0): log(expm1(v)) written stably."""
    return v + torch.log(-torch.expm1(-v))


def decode_symbols(model: EntropyModel, data: bytes, indexes: torch.Tensor, what: str) -> torch.Tensor:
    """Raw symbols (float64, the shape of ``indexes``) of one rANS stream, with a decoder that refuses
    malformed streams (:mod:`gnvc.codec.rans`) instead of CompressAI's, which reads past their end."""
    symbols = rans_decode(
        data,
        indexes.reshape(-1).int().tolist(),
        model._quantized_cdf.tolist(),
        model._cdf_length.reshape(-1).int().tolist(),
        model._offset.reshape(-1).int().tolist(),
        what,
    )
    device = model._quantized_cdf.device
    return torch.tensor(symbols, dtype=torch.float64, device=device).reshape(tuple(indexes.shape))


class ConditionalHyperprior(nn.Module):
    """Codes y (B, M, h, w) given a gain (B, M, 1, 1) and an optional context at y's size."""

    def __init__(self, y_channels: int, z_channels: int, channels: int, context_channels: int = 0) -> None:
        super().__init__()
        self.h_a = HyperAnalysis(y_channels, channels, z_channels)
        self.h_s = HyperSynthesis(z_channels, channels)
        self.entropy_parameters = nn.Sequential(
            conv3x3(channels + context_channels, channels),
            LeakyReLU(),
            conv3x3(channels, channels),
            LeakyReLU(),
            conv3x3(channels, 2 * y_channels),
        )
        self.entropy_bottleneck = EntropyBottleneck(z_channels)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=SCALE_BOUND)
        for name in _INT_TABLES:
            self.register_buffer(name, torch.zeros(0, dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        for name in _INT_TABLES:  # shipped tables replace the empty placeholders at their real size
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def z_size(y_size: tuple[int, int]) -> tuple[int, int]:
        return halve(halve(y_size))

    # ------------------------------------------------------------------ float (training) pass
    def _gained_params(
        self, z_hat: torch.Tensor, y_size: tuple[int, int], gain: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.h_s(z_hat, y_size)
        if context is not None:
            feats = torch.cat([feats, context], dim=1)
        mu, scale = self.entropy_parameters(feats).chunk(2, dim=1)
        scale = nn.functional.softplus(scale) * gain
        return snap_means(mu * gain), scale

    def forward(
        self,
        y: torch.Tensor,
        gain: torch.Tensor,
        context: torch.Tensor | None = None,
        noise: NoiseFn | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training/estimation pass: (y_hat, {"y": likelihoods, "z": likelihoods}).

        In training the likelihoods are those of y and z plus uniform noise in [-½, ½) (the rate
        proxy). ``noise(shape)`` supplies it (dim 0 the batch); without it CompressAI draws it from
        torch's global RNG. The trainer passes its per-sample draw so that N data-parallel workers
        add to each sample the noise one process would (two workers seeded alike would otherwise
        give their rows identical noise).
        """
        explicit = noise is not None and self.training
        z = self.h_a(y)
        if explicit:
            z_lik = _bottleneck_likelihood(self.entropy_bottleneck, z + noise(tuple(z.shape)))
        else:
            _, z_lik = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians()
        z_hat = quantize_ste(z - medians) + medians
        mu, scale = self._gained_params(z_hat, y.shape[-2:], gain, context)
        y_g = y * gain
        if explicit:
            gc = self.gaussian_conditional
            y_lik = gc._likelihood(y_g + noise(tuple(y_g.shape)), scale, mu)
            if gc.use_likelihood_bound:
                y_lik = gc.likelihood_lower_bound(y_lik)
        else:
            _, y_lik = self.gaussian_conditional(y_g, scale, means=mu)
        y_hat = (quantize_ste(y_g - mu) + mu) / gain
        return y_hat, {"y": y_lik, "z": z_lik}

    # ------------------------------------------------------------------ integer tables
    @torch.no_grad()
    def update_integer(self, gains: torch.Tensor) -> None:
        """Integer networks and tables for every quality index; ``gains`` (Q, M) float. Run after
        CompressAI's ``update()`` (the scale table and medians must be final)."""
        g = gains.detach().double().cpu()
        self.int_gain = torch.round(g * (1 << GAIN_BITS)).to(torch.int64)
        self.int_gain_inv = torch.round((1 << GAIN_BITS) / g).to(torch.int64)
        table = self.gaussian_conditional.scale_table.detach().double().cpu()[:-1]  # (L−1,)
        # scale = softplus(s)·gain ≤ table[i]  ⇔  s ≤ softplus⁻¹(table[i]/gain); s = S/2^ACT_BITS.
        thr = torch.floor(softplus_inverse(table[None, None, :] / g[:, :, None]) * (1 << ACT_BITS))
        limit = float(1 << (ACT_LIMIT_BITS + 1))
        self.int_thresholds = thr.clamp(-limit, limit).to(torch.int64)  # (Q, M, L−1)
        medians = self.entropy_bottleneck._get_medians().detach().double().cpu().flatten()
        self.int_z_medians = torch.round(medians * (1 << ACT_BITS)).to(torch.int64)

    def integer_ready(self) -> bool:
        return all(getattr(self, n).numel() > 0 for n in _INT_TABLES)

    # ------------------------------------------------------------------ integer parameter path
    def _int_params(
        self, z_sym: torch.Tensor, y_size: tuple[int, int], quality: int, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded z symbols (+ integer context) → (means in 1/16 units, CDF indexes), exactly."""
        z = saturate(z_sym.double() * float(1 << ACT_BITS) + self.int_z_medians.double()[None, :, None, None])
        feats = self.h_s.forward_int(z, y_size)
        if context is not None:
            feats = torch.cat([feats, context], dim=1)
        mu, s = sequential_int(self.entropy_parameters, feats).chunk(2, dim=1)
        gain = self.int_gain[quality].to(mu.device).double()[None, :, None, None]
        means16 = round_shift(mu * gain, ACT_BITS + GAIN_BITS - MEAN_BITS)
        thr = self.int_thresholds[quality].to(s.device).double()  # (M, L−1)
        indexes = (s.unsqueeze(-1) > thr[None, :, None, None, :]).sum(-1).to(torch.int32)
        return means16, indexes

    def _int_y(self, symbols: torch.Tensor, means16: torch.Tensor, quality: int) -> torch.Tensor:
        """ŷ in the fixed-point domain: (16·symbol + mean)/(16·gain), with the integer inverse gain."""
        y16 = (symbols.double() * MEAN_GRID + means16).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)
        inv = self.int_gain_inv[quality].to(y16.device).double()[None, :, None, None]
        return saturate(round_shift(y16 * inv, GAIN_BITS + MEAN_BITS - ACT_BITS))

    def _decode_z(self, z_string: bytes, z_size: tuple[int, int]) -> torch.Tensor:
        eb = self.entropy_bottleneck
        indexes = eb._build_indexes((1, eb._quantized_cdf.size(0), *z_size))
        return decode_symbols(eb, z_string, indexes, "the z stream")

    @torch.no_grad()
    def compress(
        self, y: torch.Tensor, quality: int, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[bytes]]:
        """Entropy-code one frame (batch 1; ``context`` integer). Returns the decoder's integer ŷ
        and ``[z_bytes, y_bytes]``."""
        if y.shape[0] != 1:
            raise ValueError("compress codes one frame at a time (batch 1)")
        z = self.h_a(y)
        z_string = self.entropy_bottleneck.compress(z)[0]
        z_sym = self._decode_z(z_string, tuple(z.shape[-2:]))  # what the decoder will see
        means16, indexes = self._int_params(z_sym, tuple(y.shape[-2:]), quality, context)
        gain = self.int_gain[quality].to(y.device).double()[None, :, None, None] / (1 << GAIN_BITS)
        symbols = torch.round(y.double() * gain - means16 / MEAN_GRID)
        y_string = self.gaussian_conditional.compress(symbols, indexes)[0]
        return self._int_y(symbols, means16, quality), [z_string, y_string]

    @torch.no_grad()
    def decompress(
        self, strings: list[bytes], y_size: tuple[int, int], quality: int, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[z_bytes, y_bytes]`` → integer ŷ (B=1), bit-exact with :meth:`compress` on any machine."""
        z_sym = self._decode_z(strings[0], self.z_size(y_size))
        means16, indexes = self._int_params(z_sym, y_size, quality, context)
        symbols = decode_symbols(self.gaussian_conditional, strings[1], indexes, "the y stream")
        return self._int_y(symbols, means16, quality)
