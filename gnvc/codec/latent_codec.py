"""The contextual latent codec: I/P conditional coding of a sequence of normalised VAE latents.

Latent frame 1 (I) is coded alone with a mean-scale hyperprior. Every later frame t (P) is coded
*conditionally* on a context f_{t−1} extracted from the previous decoded latent (DCVC-RT style,
in the latent domain): ŷ_t = Q(g_a(l_t | f_{t−1})), l̂_t = g_s(ŷ_t, f_{t−1}), and the entropy
parameters of ŷ_t come from its hyperprior and the context together. The contexts {f_t} are also
handed to the refiner's adapter. One model codes every rate point through learned per-channel
gains indexed by the quality index (higher index, higher rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from compressai.models import CompressionModel
from safetensors.torch import save_file

from gnvc.codec.entropy import ConditionalHyperprior, NoiseFn
from gnvc.codec.integer import LeakyReLU, from_fixed, has_integer_weights, quantize_all, sequential_int
from gnvc.codec.layers import Analysis, ContextExtractor, Synthesis, conv3x3, halve
from gnvc.errors import WeightsError
from gnvc.tensor_files import load_tensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class CodecOutput:
    """What the differentiable pass returns (training and rate estimation)."""

    latents_hat: torch.Tensor  # x_c, (B, C, F, h, w)
    context: torch.Tensor  # {f_t}, (B, C_ctx, F, h, w)
    likelihoods: dict[str, torch.Tensor]
    bits: torch.Tensor  # (B,) estimated rate of each sequence, in bits


@dataclass
class CompressedLatents:
    """An entropy-coded latent sequence: per latent frame ``[z_bytes, y_bytes]``."""

    quality: int
    size: tuple[int, int]  # latent (h, w)
    frames: list[list[bytes]] = field(default_factory=list)

    @property
    def num_bytes(self) -> int:
        return sum(len(s) for f in self.frames for s in f)


class ContextualLatentCodec(CompressionModel):
    """I/P conditional latent codec with a quality index. Call ``update()`` before ``compress``."""

    def __init__(
        self,
        latent_channels: int = 16,
        channels: int = 64,
        y_channels: int = 32,
        z_channels: int = 32,
        context_channels: int = 32,
        num_qualities: int = 6,
        gain_range: tuple[float, float] = (-1.5, 1.5),
    ) -> None:
        super().__init__()
        self.config = {
            "latent_channels": latent_channels,
            "channels": channels,
            "y_channels": y_channels,
            "z_channels": z_channels,
            "context_channels": context_channels,
            "num_qualities": num_qualities,
            "gain_range": list(gain_range),
        }
        c, n, m = latent_channels, channels, y_channels
        self.intra_analysis = Analysis(c, n, m)
        self.intra_synthesis = Synthesis(m, n, c)
        self.intra_entropy = ConditionalHyperprior(m, z_channels, n)
        self.context_extractor = ContextExtractor(c, context_channels)
        self.inter_analysis = Analysis(c + context_channels, n, m)
        self.inter_synthesis = Synthesis(m, n, c, context_channels=context_channels)
        self.context_to_y = torch.nn.Sequential(
            conv3x3(context_channels, n, stride=2), LeakyReLU(), conv3x3(n, n, stride=2)
        )
        self.inter_entropy = ConditionalHyperprior(m, z_channels, n, context_channels=n)
        lo, hi = gain_range
        init = torch.linspace(lo, hi, num_qualities).unsqueeze(1).repeat(1, m)
        self.log_gain = torch.nn.Parameter(init)

    # ------------------------------------------------------------------ config / weights
    @property
    def num_qualities(self) -> int:
        return int(self.config["num_qualities"])

    @property
    def context_channels(self) -> int:
        return int(self.config["context_channels"])

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ContextualLatentCodec:
        cfg = dict(config)
        cfg["gain_range"] = tuple(cfg.get("gain_range", (-1.5, 1.5)))
        return cls(**cfg)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, config: dict[str, Any] | None = None) -> ContextualLatentCodec:
        """Load ``config.json`` + ``model.safetensors``; ``config``: the already validated config
        (``gnvc.models.schema`` checks it; this package imports nothing from ``gnvc.models``)."""
        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not cfg_file.is_file() or not w_file.is_file():
            raise WeightsError(f"{path}: no codec here (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            model = cls.from_config(config if config is not None else json.loads(cfg_file.read_text()))
            # CompressionModel.load_state_dict resizes the CDF-table buffers to the shipped tables.
            model.load_state_dict(load_tensors(w_file))
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
            raise WeightsError(f"{path}: the codec weights could not be loaded ({e})") from None
        if not model.tables_ready():
            raise WeightsError(f"{path}: the codec has no entropy tables; the model was saved without update()")
        return model.eval()

    def tables_ready(self) -> bool:
        """Whether the integer CDF tables and the integer decoding loop exist (``update()`` was run);
        decoding never rebuilds them."""
        gcs = [self.intra_entropy.gaussian_conditional, self.inter_entropy.gaussian_conditional]
        ebs = [self.intra_entropy.entropy_bottleneck, self.inter_entropy.entropy_bottleneck]
        cdfs = all(m._quantized_cdf.numel() > 0 for m in gcs + ebs)
        ints = self.intra_entropy.integer_ready() and self.inter_entropy.integer_ready()
        return cdfs and ints and all(has_integer_weights(m) for m in self._decoder_networks())

    def _decoder_networks(self) -> list[torch.nn.Module]:
        """The networks the decoding loop runs (as integer networks); the analyses are encoder-only."""
        nets: list[torch.nn.Module] = [self.intra_synthesis, self.inter_synthesis, self.context_extractor]
        nets.append(self.context_to_y)
        for e in (self.intra_entropy, self.inter_entropy):
            nets += [e.h_s, e.entropy_parameters]
        return nets

    # ------------------------------------------------------------------ helpers
    def gain(self, quality: torch.Tensor | int) -> torch.Tensor:
        """Per-channel gains (B, M, 1, 1) of the quality indices."""
        q = torch.as_tensor(quality, device=self.log_gain.device).long().reshape(-1)
        if bool((q < 0).any()) or bool((q >= self.num_qualities).any()):
            raise ValueError(f"quality index must be in [0, {self.num_qualities - 1}], got {q.tolist()}")
        return torch.exp(self.log_gain[q])[:, :, None, None]

    @staticmethod
    def y_size(size: tuple[int, int]) -> tuple[int, int]:
        return halve(halve(size))

    # ------------------------------------------------------------------ differentiable pass
    def forward(self, latents: torch.Tensor, quality: torch.Tensor, noise: NoiseFn | None = None) -> CodecOutput:
        """latents (B, C, F, h, w), quality (B,) → reconstruction, contexts, likelihoods, bits.

        ``noise``: the training's quantisation noise source (:meth:`ConditionalHyperprior.forward`)."""
        size = tuple(latents.shape[-2:])
        gain = self.gain(quality)
        frames_hat, contexts, liks = [], [], {}
        for t in range(latents.shape[2]):
            l_t = latents[:, :, t]
            if t == 0:
                y_hat, lik = self.intra_entropy(self.intra_analysis(l_t), gain, noise=noise)
                l_hat = self.intra_synthesis(y_hat, size)
            else:
                f = contexts[-1]
                y = self.inter_analysis(torch.cat([l_t, f], dim=1))
                y_hat, lik = self.inter_entropy(y, gain, self.context_to_y(f), noise=noise)
                l_hat = self.inter_synthesis(y_hat, size, f)
            frames_hat.append(l_hat)
            contexts.append(self.context_extractor(l_hat))
            for k, v in lik.items():
                liks[f"{k}{t}"] = v
        bits = sum(-torch.log2(v).flatten(1).sum(1) for v in liks.values())
        return CodecOutput(torch.stack(frames_hat, 2), torch.stack(contexts, 2), liks, bits)

    def fit_quantiles(self, steps: int = 3000, lr: float = 0.5) -> float:
        """Converge the factorized priors' quantiles; returns the final auxiliary loss.

        CompressAI's auxiliary loss places each quantile where the learned CDF of z reaches its
        tail mass, the median included, which ``update()`` turns into the symbols' offsets and the
        CDF tables' range. It depends on the density model alone, not on data, but during
        training its quantiles trail a density that keeps moving (the base release's Stage I
        logged aux ≈ 900–2600 throughout). Run to convergence here before ``update()`` (Adam,
        learning rate cosine-decayed 0.5 → 5e-4: large enough for an untrained density's far
        tails, small enough at the end to settle; 2637 → 0.001 untrained, 2220 → 0.14 for the
        base codec at step 3000, ≈ 5 s on a CPU), it changes no other weight. Like any training
        step its result may differ in the last bits across CPUs; it is shipped with the tables,
        and decoders never rerun it.
        """
        quantiles = [p for n, p in self.named_parameters() if n.endswith("quantiles")]
        if not quantiles or steps <= 0:
            return float(self.aux_loss().detach())
        opt = torch.optim.Adam(quantiles, lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
        )
        with torch.enable_grad():
            for _ in range(steps):
                grads = torch.autograd.grad(self.aux_loss(), quantiles)
                for p, g in zip(quantiles, grads, strict=True):
                    p.grad = g
                opt.step()
                sched.step()
        for p in quantiles:
            p.grad = None
        return float(self.aux_loss().detach())

    # ------------------------------------------------------------------ integer decoding loop
    @torch.no_grad()
    def update(self, scale_table: torch.Tensor | None = None, force: bool = False) -> bool:
        """CompressAI's CDF tables, then the integer networks and tables of the decoding loop.

        Run once after training (``save_pretrained`` ships the result); decoders never rerun it.
        """
        updated = super().update(scale_table=scale_table, force=force)
        gains = torch.exp(self.log_gain.detach())
        self.intra_entropy.update_integer(gains)
        self.inter_entropy.update_integer(gains)
        for m in self._decoder_networks():
            quantize_all(m)
        return updated

    def code_frame(
        self, latent: torch.Tensor, quality: int, context: torch.Tensor | None
    ) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
        """Encode one latent frame (1, C, h, w): an I-frame when ``context`` is None, else a P-frame
        conditioned on the previous frame's integer context. Returns ``[z, y]`` streams and the
        decoder's integer latent and context (see :meth:`decode_frame`)."""
        size = tuple(latent.shape[-2:])
        if context is None:
            y = self.intra_analysis(latent)
            y_int, strings = self.intra_entropy.compress(y, quality)
        else:
            y = self.inter_analysis(torch.cat([latent, from_fixed(context, latent.dtype)], dim=1))
            y_int, strings = self.inter_entropy.compress(y, quality, sequential_int(self.context_to_y, context))
        return (strings, *self._reconstruct(y_int, size, context))  # type: ignore[return-value]

    def decode_frame(
        self, strings: list[bytes], size: tuple[int, int], quality: int, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[z, y]`` streams → (integer latent (1, C, h, w), integer context), exactly as encoded.

        Integer tensors are float64 holding integers at 2^-ACT_BITS (``from_fixed`` gives values).
        """
        if context is None:
            y_int = self.intra_entropy.decompress(strings, self.y_size(size), quality)
        else:
            ctx_y = sequential_int(self.context_to_y, context)
            y_int = self.inter_entropy.decompress(strings, self.y_size(size), quality, ctx_y)
        return self._reconstruct(y_int, size, context)

    def _reconstruct(
        self, y_int: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None:
            latent = self.intra_synthesis.forward_int(y_int, size)
        else:
            latent = self.inter_synthesis.forward_int(y_int, size, context)
        return latent, self.context_extractor.forward_int(latent)

    @torch.no_grad()
    def compress(
        self, latents: torch.Tensor, quality: int, intra_period: int = 0
    ) -> tuple[CompressedLatents, torch.Tensor, torch.Tensor]:
        """Code a whole sequence (batch 1) as one P-chain (an I-frame every ``intra_period`` frames;
        0: only the first). Returns the streams and the decoder's latents and contexts (float)."""
        if latents.ndim != 5 or latents.shape[0] != 1:
            raise ValueError(f"compress takes latents (1, C, F, h, w), got {tuple(latents.shape)}")
        self.gain(quality)  # range check
        size = tuple(latents.shape[-2:])
        out = CompressedLatents(quality=int(quality), size=size)  # type: ignore[arg-type]
        frames_hat, contexts, ctx = [], [], None
        for t in range(latents.shape[2]):
            if intra_period and t % intra_period == 0:
                ctx = None
            strings, l_int, ctx = self.code_frame(latents[:, :, t], quality, ctx)
            out.frames.append(strings)
            frames_hat.append(from_fixed(l_int))
            contexts.append(from_fixed(ctx))
        return out, torch.stack(frames_hat, 2), torch.stack(contexts, 2)

    @torch.no_grad()
    def decompress(self, data: CompressedLatents, intra_period: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Streams → (latents_hat (1, C, F, h, w), contexts (1, C_ctx, F, h, w)), bit-exact with compress."""
        frames_hat, contexts, ctx = [], [], None
        for t, strings in enumerate(data.frames):
            if intra_period and t % intra_period == 0:
                ctx = None
            l_int, ctx = self.decode_frame(strings, data.size, data.quality, ctx)
            frames_hat.append(from_fixed(l_int))
            contexts.append(from_fixed(ctx))
        return torch.stack(frames_hat, 2), torch.stack(contexts, 2)
