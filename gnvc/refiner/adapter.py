"""The compression-aware conditional adapter: zero-initialised modulation of every DiT block.

The codec's context features {f_t} (B, C_ctx, F, h, w) are patchified exactly like the latents
(a Conv3d with the DiT's patch size and stride, then the DiT's own flatten/transpose order), so
token n of the context lines up with token n of the DiT's hidden states. A small time embedding
is added because the correction the adapter learns (Δv_fine) depends on where on the path the
sample is. For each block i a zero-initialised linear layer turns the tokens into a shift and a
scale, applied to the block's output: h ← h·(1 + scale_i) + shift_i.

Why forward hooks rather than a wrapped block: ``WanTransformerBlock.forward`` has no slot for
extra inputs, and hooks leave the DiT's module tree and state-dict keys untouched, so the real
Wan2.1 weights load as they are, LoRA (peft) can wrap the same modules, and with the adapter
removed the DiT is bit-for-bit the base model. The tokens of the current call live in
:attr:`ContextAdapter._tokens` only while :meth:`ContextAdapter.conditioning` is active; a block
evaluated outside it (a recomputation by the DiT's own block-level gradient checkpointing, for
instance) would see no tokens, so the refiner checkpoints whole velocity evaluations instead and
refuses the DiT's block-level checkpointing while the adapter is in use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn
from torch.utils.hooks import RemovableHandle


class ContextAdapter(nn.Module):
    """Per-block shift/scale modulation of the DiT's hidden states by the codec's context tokens."""

    def __init__(
        self,
        context_channels: int,
        inner_dim: int,
        num_layers: int,
        patch_size: tuple[int, int, int] | list[int],
        hidden_dim: int = 64,
        time_freq_dim: int = 64,
    ) -> None:
        super().__init__()
        self.config = {
            "context_channels": int(context_channels),
            "inner_dim": int(inner_dim),
            "num_layers": int(num_layers),
            "patch_size": [int(p) for p in patch_size],
            "hidden_dim": int(hidden_dim),
            "time_freq_dim": int(time_freq_dim),
        }
        ps = tuple(self.config["patch_size"])
        self.patchify = nn.Conv3d(context_channels, hidden_dim, kernel_size=ps, stride=ps)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_freq_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.token_mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU())
        self.block_proj = nn.ModuleList([nn.Linear(hidden_dim, 2 * inner_dim) for _ in range(num_layers)])
        for proj in self.block_proj:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        self._tokens: torch.Tensor | None = None
        self._handles: list[RemovableHandle] = []

    # ------------------------------------------------------------------ tokens
    def tokens(self, context: torch.Tensor, wan_timestep: torch.Tensor) -> torch.Tensor:
        """Context (B, C_ctx, F, h, w) and the DiT's (B,) timestep → tokens (B, N, hidden_dim)."""
        x = self.patchify(context.to(self.patchify.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # the DiT's token order: frames, rows, columns
        temb = get_timestep_embedding(
            wan_timestep.float(), self.config["time_freq_dim"], flip_sin_to_cos=True, downscale_freq_shift=0
        )
        temb = self.time_mlp(temb.to(x.dtype))
        return self.token_mlp(x + temb[:, None, :])

    @contextlib.contextmanager
    def conditioning(self, context: torch.Tensor, wan_timestep: torch.Tensor) -> Iterator[None]:
        """Make the DiT's blocks see ``context`` for the duration of one forward pass."""
        if not self._handles:
            raise RuntimeError("ContextAdapter.attach(transformer) must be called first")
        self._tokens = self.tokens(context, wan_timestep)
        try:
            yield
        finally:
            self._tokens = None

    # ------------------------------------------------------------------ hooks
    def attach(self, transformer: nn.Module) -> None:
        """Register one forward hook per DiT block (idempotent)."""
        self.detach()
        blocks = transformer.blocks
        if len(blocks) != self.config["num_layers"]:
            raise ValueError(f"adapter built for {self.config['num_layers']} blocks, the DiT has {len(blocks)}")
        for i, block in enumerate(blocks):
            self._handles.append(block.register_forward_hook(self._make_hook(i)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _make_hook(self, index: int):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            if self._tokens is None:
                return None
            if self._tokens.shape[1] != output.shape[1]:
                raise RuntimeError(
                    f"context gives {self._tokens.shape[1]} tokens, the DiT has {output.shape[1]}: "
                    "context and latents must have the same (F, h, w)"
                )
            shift, scale = self.block_proj[index](self._tokens).chunk(2, dim=-1)
            return (output * (1 + scale) + shift).to(output.dtype)

        return hook
