"""The frozen 3D causal VAE (``diffusers.AutoencoderKLWan``) with latent normalisation and padding.

The codec and the refiner work on *normalised* latents, (z − mean)/std per channel, so that the
DiT prior sees unit-scale data and the codec's quantisation step means the same thing for every
channel. Frame counts must be 1 + 4k and sizes multiples of 16 (8× VAE, 2× DiT patches); the Wan
classes silently truncate otherwise, so this wrapper checks instead of guessing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan
from torch import nn

from gnvc.errors import InputError, WeightsError

PAD_MULTIPLE = 16
TEMPORAL_FACTOR = 4
SPATIAL_FACTOR = 8


def padded_frames(num_frames: int) -> int:
    """Frames a clip of ``num_frames`` is coded with: the next 1 + 4k (the last frame repeated)."""
    return 1 + TEMPORAL_FACTOR * math.ceil((num_frames - 1) / TEMPORAL_FACTOR)


def padded_size(size: int) -> int:
    """A side padded up to the next multiple of 16."""
    return PAD_MULTIPLE * math.ceil(size / PAD_MULTIPLE)


def latent_frames(num_frames: int) -> int:
    """Latent frames for 1 + 4k pixel frames."""
    return 1 + (num_frames - 1) // TEMPORAL_FACTOR


class VideoVAE(nn.Module):
    """Encode pixels in [-1, 1] (B, 3, T, H, W) to normalised latents (B, 16, F, H/8, W/8), and back."""

    pad_multiple = PAD_MULTIPLE

    def __init__(self, vae: AutoencoderKLWan) -> None:
        super().__init__()
        self.vae = vae
        cfg = vae.config
        c = cfg.z_dim
        self.register_buffer("mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, c, 1, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, c, 1, 1, 1), False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VideoVAE:
        return cls(AutoencoderKLWan(**config))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VideoVAE:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise WeightsError(f"{path}: no VAE here (expected config.json and diffusion_pytorch_model.safetensors)")
        try:
            vae = AutoencoderKLWan.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise WeightsError(f"{path}: the VAE weights could not be loaded ({e})") from None
        return cls(vae)

    def save_pretrained(self, path: str | Path) -> None:
        self.vae.save_pretrained(str(path), safe_serialization=True)

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store new normalisation statistics (after training the VAE) in the buffers and the config."""
        c = self.vae.config.z_dim
        self.mean.copy_(mean.reshape(1, c, 1, 1, 1))
        self.std.copy_(std.reshape(1, c, 1, 1, 1))
        self.vae.register_to_config(latents_mean=mean.flatten().tolist(), latents_std=std.flatten().tolist())

    @staticmethod
    def check_geometry(x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 3:
            raise InputError(f"VAE input must be (B, 3, T, H, W), got {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if (t - 1) % TEMPORAL_FACTOR or h % PAD_MULTIPLE or w % PAD_MULTIPLE:
            raise InputError(f"VAE input needs 1+4k frames and sides that are multiples of 16, got T={t}, {w}x{h}")

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pixels → normalised latents (the posterior mean unless ``sample``)."""
        self.check_geometry(x)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.mean) / self.std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → pixels in [-1, 1]."""
        z = latents * self.std + self.mean
        return self.vae.decode(z).sample.clamp(-1, 1)

    @torch.no_grad()
    def inflate_temporal(self) -> int:
        """Turn an image-trained causal VAE into a per-frame video VAE ("inflation"); returns layers changed.

        A causal conv3d applied to a lone first frame sees zero padding at its earlier temporal taps,
        so image training (frame 1 is the intra path) leaves those taps at their random init and
        never runs the temporal resamplers at all. Switched to clips as is, that random temporal
        path scrambles every frame after the first (the base VAE fell from 22 to 12 dB on P-frames).
        Inflating first — earlier taps zeroed, the 2× temporal downsamplers averaging their two
        frames, the upsamplers repeating each frame (Wan2.2's AvgDown3D/DupUp3D idea) — makes the
        clip phase start from the image VAE applied per frame: 19 dB instead of 12 on held-out clips
        before any clip step (docs/training.md).
        """
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample

        changed = 0
        resamplers = set()
        for m in self.vae.modules():
            if isinstance(m, WanResample) and hasattr(m, "time_conv"):
                conv = m.time_conv
                resamplers.add(conv)
                conv.weight.zero_()
                conv.bias.zero_()
                c = conv.weight.shape[1]
                eye = torch.eye(c, dtype=conv.weight.dtype, device=conv.weight.device)
                if m.mode == "upsample3d":  # output channels [0:c] → even frames, [c:2c] → odd frames
                    conv.weight[:c, :, -1, 0, 0] = eye
                    conv.weight[c:, :, -1, 0, 0] = eye
                else:  # stride 2 over (previous, f1, f2): the mean of f1 and f2
                    conv.weight[:, :, -2, 0, 0] = 0.5 * eye
                    conv.weight[:, :, -1, 0, 0] = 0.5 * eye
                changed += 1
        for m in self.vae.modules():
            if isinstance(m, WanCausalConv3d) and m not in resamplers and m.kernel_size[0] > 1:
                m.weight[:, :, :-1].zero_()
                changed += 1
        return changed

    def stream_encoder(self) -> StreamEncoder:
        return StreamEncoder(self)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


def _conv_count(vae: AutoencoderKLWan, part: str) -> int:
    counts = getattr(vae, "_cached_conv_counts", None)
    if counts is not None:
        return int(counts[part])
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    return sum(isinstance(m, WanCausalConv3d) for m in getattr(vae, part).modules())


class _CausalStream:
    """A feature cache of its own for one part (``encoder``/``decoder``) of the causal VAE."""

    part = ""

    def __init__(self, vae: VideoVAE) -> None:
        if vae.vae.config.get("patch_size") is not None:
            raise WeightsError("streaming needs a Wan2.1-style VAE (patch_size None)")
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        """Start a new causal segment: the next chunk is a segment's first."""
        self._cache: list = [None] * _conv_count(self.vae.vae, self.part)
        self.first = True


class StreamEncoder(_CausalStream):
    """The causal VAE encoder run chunk by chunk with its own feature cache (bounded memory).

    Exactly what ``AutoencoderKLWan._encode`` computes for a whole clip — first frame alone, then
    four frames per latent — but one chunk at a time, so a video of any length is encoded holding
    one chunk. ``reset()`` starts a new causal segment (the next chunk must be a single frame).
    """

    part = "encoder"

    @torch.no_grad()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Pixels (1, 3, t, H, W) in [-1, 1] (t = 1 first, then 4) → one normalised latent (1, C, 1, h, w)."""
        want = 1 if self.first else TEMPORAL_FACTOR
        if chunk.shape[2] != want:
            raise InputError(f"the causal VAE takes {want} frame(s) here, got {chunk.shape[2]}")
        vae = self.vae.vae
        out = vae.encoder(chunk, feat_cache=self._cache, feat_idx=[0])
        mu = vae.quant_conv(out)[:, : vae.config.z_dim]
        self.first = False
        return (mu - self.vae.mean) / self.vae.std


class StreamDecoder(_CausalStream):
    """The causal VAE decoder run latent by latent with its own feature cache (bounded memory)."""

    part = "decoder"

    @torch.no_grad()
    def push(self, latent: torch.Tensor) -> torch.Tensor:
        """One normalised latent (1, C, 1, h, w) → pixels (1, 3, t, H, W) in [-1, 1], t = 1 then 4."""
        vae = self.vae.vae
        x = vae.post_quant_conv(latent * self.vae.std + self.vae.mean)
        out = vae.decoder(x, feat_cache=self._cache, feat_idx=[0], first_chunk=self.first)
        self.first = False
        return out.clamp(-1, 1)
