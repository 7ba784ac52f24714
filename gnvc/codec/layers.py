"""Small convolutional building blocks of the latent codec's transforms.

Strided 3×3 convolutions give ceil(h/2) outputs and sub-pixel upsampling is cropped back to the
recorded size, so any latent size codes without padding (no rate is spent on padded borders).

Every block that runs on the decoder side has two forwards: ``forward`` (float, for training and
the encoder's analysis) and ``forward_int`` (exact fixed point, :mod:`gnvc.codec.integer`), which
is what the decoding loop runs so that its numbers are the same on every machine.
"""

from __future__ import annotations

import torch
from torch import nn

from gnvc.codec.integer import Conv2d, LeakyReLU, run_int, saturate, sequential_int


def conv3x3(cin: int, cout: int, stride: int = 1) -> Conv2d:
    return Conv2d(cin, cout, 3, stride=stride, padding=1)


def halve(size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after a stride-2 3×3 convolution with padding 1."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def pyramid(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """``[size, halve(size), ...]``, ``levels + 1`` entries."""
    sizes = [tuple(size)]
    for _ in range(levels):
        sizes.append(halve(sizes[-1]))
    return sizes  # type: ignore[return-value]


class ResBlock(nn.Module):
    """conv–LeakyReLU–conv with an identity skip."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(ch, ch), LeakyReLU(), conv3x3(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def forward_int(self, x: torch.Tensor) -> torch.Tensor:
        return saturate(x + sequential_int(self.body, x))


class Upsample(nn.Module):
    """Sub-pixel ×2 upsampling, cropped to a target size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = Conv2d(cin, cout * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.shuffle(self.conv(x))[..., : size[0], : size[1]]

    def forward_int(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.shuffle(self.conv.forward_int(x))[..., : size[0], : size[1]]


class Analysis(nn.Module):
    """``cin`` channels at size s → ``cout`` channels at s/4: conv, res, ↓, res, ↓."""

    def __init__(self, cin: int, ch: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv3x3(cin, ch),
            ResBlock(ch),
            conv3x3(ch, ch, stride=2),
            LeakyReLU(),
            ResBlock(ch),
            conv3x3(ch, cout, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Synthesis(nn.Module):
    """``cin`` channels at s/4 → ``cout`` at s, optionally fusing a context at full size."""

    def __init__(self, cin: int, ch: int, cout: int, context_channels: int = 0) -> None:
        super().__init__()
        self.head = nn.Sequential(conv3x3(cin, ch), ResBlock(ch))
        self.up1 = Upsample(ch, ch)
        self.mid = nn.Sequential(LeakyReLU(), ResBlock(ch))
        self.up2 = Upsample(ch, ch)
        self.fuse = conv3x3(ch + context_channels, ch)
        self.tail = nn.Sequential(ResBlock(ch), conv3x3(ch, cout))

    def forward(self, y: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None = None) -> torch.Tensor:
        sizes = pyramid(size, 2)
        x = self.mid(self.up1(self.head(y), sizes[1]))
        x = self.up2(x, sizes[0])
        if context is not None:
            x = torch.cat([x, context], dim=1)
        return self.tail(self.fuse(x))

    def forward_int(self, y: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None = None) -> torch.Tensor:
        sizes = pyramid(size, 2)
        x = sequential_int(self.mid, self.up1.forward_int(sequential_int(self.head, y), sizes[1]))
        x = self.up2.forward_int(x, sizes[0])
        if context is not None:
            x = torch.cat([x, context], dim=1)
        return sequential_int(self.tail, self.fuse.forward_int(x))


class HyperAnalysis(nn.Module):
    """y (at s) → z (at s/4)."""

    def __init__(self, cin: int, ch: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv3x3(cin, ch),
            LeakyReLU(),
            conv3x3(ch, ch, stride=2),
            LeakyReLU(),
            conv3x3(ch, cout, stride=2),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class HyperSynthesis(nn.Module):
    """ẑ (at s/4) → hyper features (at s)."""

    def __init__(self, cin: int, ch: int) -> None:
        super().__init__()
        self.head = nn.Sequential(conv3x3(cin, ch), LeakyReLU())
        self.up1 = Upsample(ch, ch)
        self.up2 = Upsample(ch, ch)
        self.act = LeakyReLU()

    def forward(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        sizes = pyramid(size, 2)
        x = self.act(self.up1(self.head(z), sizes[1]))
        return self.act(self.up2(x, sizes[0]))

    def forward_int(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        sizes = pyramid(size, 2)
        x = run_int(self.act, self.up1.forward_int(sequential_int(self.head, z), sizes[1]))
        return run_int(self.act, self.up2.forward_int(x, sizes[0]))


class ContextExtractor(nn.Module):
    """Temporal context f_t from a decoded latent: what P-frame t+1 is coded with and what the refiner sees."""

    def __init__(self, cin: int, ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(conv3x3(cin, ch), ResBlock(ch), conv3x3(ch, ch))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)

    def forward_int(self, latent: torch.Tensor) -> torch.Tensor:
        return sequential_int(self.net, latent)
