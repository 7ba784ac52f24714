"""Refinement of a latent sequence that arrives one frame at a time: overlapping windows, bounded memory.

The decoder cannot hold a whole video's latents, so the refiner integrates windows of
``window`` latent frames that overlap by ``overlap`` frames, and cross-fades the refined
latents linearly where two windows overlap. The noise x0 of a latent frame depends only on the
stream's seed and the frame's absolute position (:func:`position_noise`), never on the window it
falls in, so two windows that refine the same frame start from the same x_{tN}, and decoding from
a seek point refines a frame exactly as decoding from the start does.
"""

from __future__ import annotations

import torch

from gnvc.refiner.flow import start_point
from gnvc.refiner.model import Refiner

NOISE_MULTIPLIER = 0x9E3779B1  # odd (Fibonacci hashing): seed → well-spread 32-bit generator seeds


def position_noise(like: torch.Tensor, seed: int, position: int) -> torch.Tensor:
    """x0 ~ N(0, I) for latent frame ``position`` (shape of ``like``, (1, C, 1, h, w)).

    Drawn on the CPU in float32, whatever the device, from a generator seeded with
    (seed·0x9E3779B1 + position) mod 2³² (torch's CPU generator keeps only 32 bits of a seed):
    distinct positions of one stream always get distinct noise, and a new seed new noise.
    """
    g = torch.Generator(device="cpu").manual_seed((int(seed) * NOISE_MULTIPLIER + int(position)) & 0xFFFFFFFF)
    return torch.randn(tuple(like.shape), generator=g, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


class WindowedRefinement:
    """Feed decoded latents with :meth:`push`; refined latents come out in order, at most a window late."""

    def __init__(
        self, refiner: Refiner | None, *, t_n: float, steps: int, seed: int, window: int, overlap: int
    ) -> None:
        self.refiner = refiner if steps > 0 else None
        self.t_n, self.steps, self.seed = float(t_n), int(steps), int(seed)
        self.window = int(window) if window and window > 0 else 0  # 0: one window (flush only)
        self.overlap = min(int(overlap), self.window - 1) if self.window else 0
        self._latents: list[torch.Tensor] = []
        self._contexts: list[torch.Tensor] = []
        self._positions: list[int] = []
        self._tail: torch.Tensor | None = None  # refined latents of the carried overlap

    def push(self, latent: torch.Tensor, context: torch.Tensor, position: int) -> list[torch.Tensor]:
        """One decoded latent (1, C, 1, h, w), its context and absolute position → finished latents."""
        if self.refiner is None:
            return [latent]
        self._latents.append(latent)
        self._contexts.append(context)
        self._positions.append(position)
        if self.window and len(self._latents) == self.window:
            return self._run(final=False)
        return []

    def flush(self) -> list[torch.Tensor]:
        """End of a segment: refine what is buffered and return everything not yet returned."""
        if self.refiner is None or not self._latents:
            return []
        if self._tail is not None and len(self._latents) == self.overlap:
            out = list(self._tail.split(1, dim=2))  # no new frame since the last window
        else:
            out = self._run(final=True)
        self._latents, self._contexts, self._positions, self._tail = [], [], [], None
        return out

    @torch.no_grad()
    def _run(self, *, final: bool) -> list[torch.Tensor]:
        x_c = torch.cat(self._latents, dim=2)
        ctx = torch.cat(self._contexts, dim=2)
        x0 = torch.cat([position_noise(lat, self.seed, p) for lat, p in zip(self._latents, self._positions)], dim=2)
        refined = self.refiner.integrate(start_point(x_c, x0, self.t_n), ctx, t_n=self.t_n, steps=self.steps)
        if self._tail is not None:
            k = self._tail.shape[2]
            ramp = torch.arange(1, k + 1, dtype=refined.dtype, device=refined.device) / (k + 1)
            ramp = ramp.view(1, 1, -1, 1, 1)
            refined[:, :, :k] = self._tail * (1 - ramp) + refined[:, :, :k] * ramp
        n = refined.shape[2]
        keep = 0 if final else self.overlap
        out = list(refined[:, :, : n - keep].split(1, dim=2))
        self._tail = refined[:, :, n - keep :] if keep else None
        self._latents, self._contexts, self._positions = (
            self._latents[n - keep :], self._contexts[n - keep :], self._positions[n - keep :],
        )  # fmt: skip
        return out
