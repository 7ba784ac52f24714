"""Hyperprior entropy coding of one latent frame, with gains and an optional temporal context.

This composes CompressAI's entropy models (a factorized ``EntropyBottleneck`` on z, a
``GaussianConditional`` on y) the way its ``HyperpriorLatentCodec`` does, adding two things the
video codec needs:

- **Gains** (variable rate): y is multiplied by a learned per-channel gain of the quality index
  before quantisation and divided after, and the predicted (μ, σ) are scaled with it, so one model
  serves every rate point (as in DCVC-RT's quality-indexed scales).
- **Context**: the entropy parameters of a P-frame see the temporal context next to the
  hyperprior, which is where most of the inter-frame redundancy is removed.

Bit-exact decoding: the Gaussian tables are integer (shipped in the state dict), the scale index
comes from CompressAI's coarse table, and the means are snapped to a 1/16 grid, so y_hat =
symbol + μ_q is exact in float32 and identical wherever the network outputs agree to within that
grid — far coarser than any thread-count or machine difference in the float convolutions.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.ops import quantize_ste
from torch import nn

from gnvc.codec.layers import HyperAnalysis, HyperSynthesis, conv3x3, halve

MEAN_GRID = 16.0  # means are multiples of 1/16
SCALE_BOUND = 0.11


def snap_means(mu: torch.Tensor) -> torch.Tensor:
    """Means on the 1/16 grid (straight-through in training)."""
    return mu + (torch.round(mu * MEAN_GRID) / MEAN_GRID - mu).detach()


class ConditionalHyperprior(nn.Module):
    """Codes y (B, M, h, w) given a gain (B, M, 1, 1) and an optional context at y's size."""

    def __init__(self, y_channels: int, z_channels: int, channels: int, context_channels: int = 0) -> None:
        super().__init__()
        self.h_a = HyperAnalysis(y_channels, channels, z_channels)
        self.h_s = HyperSynthesis(z_channels, channels)
        self.entropy_parameters = nn.Sequential(
            conv3x3(channels + context_channels, channels),
            nn.LeakyReLU(0.1, inplace=True),
            conv3x3(channels, channels),
            nn.LeakyReLU(0.1, inplace=True),
            conv3x3(channels, 2 * y_channels),
        )
        self.entropy_bottleneck = EntropyBottleneck(z_channels)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=SCALE_BOUND)

    @staticmethod
    def z_size(y_size: tuple[int, int]) -> tuple[int, int]:
        return halve(halve(y_size))

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
        self, y: torch.Tensor, gain: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training/estimation pass: (y_hat, {"y": likelihoods, "z": likelihoods})."""
        z = self.h_a(y)
        _, z_lik = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians()
        z_hat = quantize_ste(z - medians) + medians
        mu, scale = self._gained_params(z_hat, y.shape[-2:], gain, context)
        y_g = y * gain
        _, y_lik = self.gaussian_conditional(y_g, scale, means=mu)
        y_hat = (quantize_ste(y_g - mu) + mu) / gain
        return y_hat, {"y": y_lik, "z": z_lik}

    @torch.no_grad()
    def compress(
        self, y: torch.Tensor, gain: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[bytes]]:
        """Entropy-code one frame (batch 1). Returns the decoder's y_hat and ``[z_bytes, y_bytes]``."""
        if y.shape[0] != 1:
            raise ValueError("compress codes one frame at a time (batch 1)")
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        mu, scale = self._gained_params(z_hat, y.shape[-2:], gain, context)
        indexes = self.gaussian_conditional.build_indexes(scale)
        y_strings = self.gaussian_conditional.compress(y * gain, indexes, means=mu)
        # Reconstruct exactly as the decoder will: from the symbols, not from y.
        y_hat = self.gaussian_conditional.decompress(y_strings, indexes, means=mu) / gain
        return y_hat, [z_strings[0], y_strings[0]]

    @torch.no_grad()
    def decompress(
        self, strings: list[bytes], y_size: tuple[int, int], gain: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        z_hat = self.entropy_bottleneck.decompress([strings[0]], self.z_size(y_size))
        mu, scale = self._gained_params(z_hat, y_size, gain, context)
        indexes = self.gaussian_conditional.build_indexes(scale)
        return self.gaussian_conditional.decompress([strings[1]], indexes, means=mu) / gain
