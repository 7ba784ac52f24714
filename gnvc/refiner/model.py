"""The refiner: Wan's video DiT as a velocity model, with a null text condition and the adapter.

Directory layout written by :meth:`Refiner.save_pretrained` (inside a model directory's
``refiner/``)::

    refiner/config.json            {"null_text": {...}, "adapter": {...}, "max_latent_frames": ..., ...}
    refiner/transformer/           diffusers WanTransformer3DModel.save_pretrained (LoRA merged in)
    refiner/refiner.safetensors    "null_text" (1, L, text_dim) and "adapter.*" weights

The transformer directory is exactly what diffusers writes, so the real Wan2.1 T2V DiT can be
dropped in as it is. The null text embedding is a *fixed* tensor stored with the model (the DiT
was trained with some text condition; the codec never has a prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from gnvc.errors import ConfigError, WeightsError
from gnvc.refiner.adapter import ContextAdapter
from gnvc.refiner.flow import euler_integrate, expand_t, start_point, wan_to_project_velocity
from gnvc.tensor_files import load_tensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "refiner.safetensors"
TRANSFORMER_DIR = "transformer"
TUNING_MODES = ("frozen", "lora", "full")


def noise_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x0 ~ N(0, I) of ``x``'s shape from a CPU generator seeded with ``seed``.

    Drawn on the CPU in float32 whatever the device, so the same bitstream seed gives the same
    noise on every machine; then moved to ``x``'s device and dtype.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(x.shape), generator=g, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


class Refiner(nn.Module):
    """Velocity model v(x_t, t | context) in the project convention, and the Euler sampler."""

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        null_text: torch.Tensor,
        adapter: ContextAdapter | None,
        *,
        max_latent_frames: int = 0,
        window_overlap: int = 2,
    ) -> None:
        super().__init__()
        if null_text.ndim != 2 or null_text.shape[1] != transformer.config.text_dim:
            raise ConfigError(
                f"null text must be (length, text_dim={transformer.config.text_dim}), got {tuple(null_text.shape)}"
            )
        self.transformer = transformer
        self.register_buffer("null_text", null_text.detach().float().clone())
        self.adapter = adapter
        if adapter is not None:
            adapter.attach(transformer)
        self.max_latent_frames = int(max_latent_frames)
        self.window_overlap = int(window_overlap)
        self.tuning = "full"
        self.checkpoint_steps = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: dict[str, Any], *, seed: int | None = None) -> Refiner:
        """A fresh refiner from a profile's ``refiner:`` section.

        ``transformer`` holds WanTransformer3DModel kwargs; ``null_text`` its ``length`` (and an
        ``init``: ``zeros`` or ``normal``); ``adapter`` the adapter's widths (omit or set
        ``enabled: false`` to build the bare prior).
        """
        if "transformer" not in cfg:
            raise ConfigError("refiner config lacks a 'transformer' section")
        if seed is not None:
            torch.manual_seed(seed)
        tcfg = dict(cfg["transformer"])
        if "patch_size" in tcfg:
            tcfg["patch_size"] = tuple(tcfg["patch_size"])
        transformer = WanTransformer3DModel(**tcfg)
        ncfg = dict(cfg.get("null_text", {}))
        length = int(ncfg.get("length", 8))
        if ncfg.get("init", "normal") == "zeros":
            null_text = torch.zeros(length, transformer.config.text_dim)
        else:
            null_text = torch.randn(length, transformer.config.text_dim)
        adapter = cls._build_adapter(cfg.get("adapter"), transformer)
        return cls(
            transformer,
            null_text,
            adapter,
            max_latent_frames=int(cfg.get("max_latent_frames", 0)),
            window_overlap=int(cfg.get("window_overlap", 2)),
        )

    @staticmethod
    def _build_adapter(acfg: dict[str, Any] | None, transformer: WanTransformer3DModel) -> ContextAdapter | None:
        if not acfg or not acfg.get("enabled", True):
            return None
        tc = transformer.config
        return ContextAdapter(
            context_channels=int(acfg["context_channels"]),
            inner_dim=tc.num_attention_heads * tc.attention_head_dim,
            num_layers=tc.num_layers,
            patch_size=tuple(tc.patch_size),
            hidden_dim=int(acfg.get("hidden_dim", 64)),
            time_freq_dim=int(acfg.get("time_freq_dim", 64)),
        )

    def config_dict(self) -> dict[str, Any]:
        return {
            "null_text": {"length": int(self.null_text.shape[0]), "dim": int(self.null_text.shape[1])},
            "adapter": dict(self.adapter.config) if self.adapter is not None else None,
            "max_latent_frames": self.max_latent_frames,
            "window_overlap": self.window_overlap,
        }

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``transformer/`` (diffusers layout, LoRA merged in), config and adapter weights."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.plain_transformer().save_pretrained(str(path / TRANSFORMER_DIR), safe_serialization=True)
        tensors = {"null_text": self.null_text.contiguous().cpu()}
        if self.adapter is not None:
            tensors.update(
                {f"adapter.{k}": v.detach().contiguous().cpu() for k, v in self.adapter.state_dict().items()}
            )
        save_file(tensors, str(path / WEIGHTS_NAME))
        (path / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Refiner:
        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not cfg_file.is_file() or not w_file.is_file() or not (path / TRANSFORMER_DIR / "config.json").is_file():
            raise WeightsError(
                f"{path}: no refiner here (expected {CONFIG_NAME}, {WEIGHTS_NAME} and {TRANSFORMER_DIR}/)"
            )
        try:
            cfg = json.loads(cfg_file.read_text())
            transformer = load_transformer(path / TRANSFORMER_DIR)
            tensors = load_tensors(w_file)
            adapter = None
            if cfg.get("adapter"):
                a = cfg["adapter"]
                adapter = ContextAdapter(
                    context_channels=a["context_channels"],
                    inner_dim=a["inner_dim"],
                    num_layers=a["num_layers"],
                    patch_size=a["patch_size"],
                    hidden_dim=a["hidden_dim"],
                    time_freq_dim=a["time_freq_dim"],
                )
                adapter.load_state_dict(
                    {k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")}
                )
            model = cls(
                transformer,
                tensors["null_text"],
                adapter,
                max_latent_frames=int(cfg.get("max_latent_frames", 0)),
                window_overlap=int(cfg.get("window_overlap", 2)),
            )
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise WeightsError(f"{path}: the refiner could not be loaded ({e})") from None
        return model.eval()

    def with_adapter(self, cfg: dict[str, Any]) -> Refiner:
        """Add a fresh (zero-initialised) adapter to a bare prior; returns ``self``."""
        if self.adapter is not None:
            self.adapter.detach()
        self.adapter = self._build_adapter(cfg, self.transformer)
        if self.adapter is not None:
            self.adapter.attach(self.transformer)
        return self

    # ------------------------------------------------------------------ tuning modes
    def set_tuning(self, mode: str, lora: dict[str, Any] | None = None) -> list[nn.Parameter]:
        """Choose what trains: ``frozen`` (adapter only), ``lora`` (adapter + LoRA) or ``full``.

        Returns the trainable parameters. LoRA uses peft through diffusers' ``add_adapter``; its
        B matrices start at zero, so the model is unchanged at the start of training, and
        :meth:`merge_lora` folds it into plain weights before saving.
        """
        if mode not in TUNING_MODES:
            raise ConfigError(f"refiner tuning must be one of {TUNING_MODES}, got {mode!r}")
        self.tuning = mode
        self.transformer.requires_grad_(mode == "full")
        if mode == "lora":
            try:
                from peft import LoraConfig
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ConfigError("tuning 'lora' needs the peft package: pip install peft") from e
            lcfg = dict(lora or {})
            rank = int(lcfg.get("rank", 8))
            self.transformer.add_adapter(
                LoraConfig(
                    r=rank,
                    lora_alpha=float(lcfg.get("alpha", rank)),
                    target_modules=list(lcfg.get("target_modules", ["to_q", "to_k", "to_v", "to_out.0"])),
                    init_lora_weights=True,
                )
            )
        if self.adapter is not None:
            self.adapter.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    def has_lora(self) -> bool:
        return any("lora_" in k for k in self.transformer.state_dict())

    def plain_transformer(self) -> WanTransformer3DModel:
        """The transformer without peft wrappers: itself, or a copy with every LoRA delta merged in."""
        if not self.has_lora():
            return self.transformer
        from peft.tuners.lora import LoraLayer

        merged: dict[str, torch.Tensor] = {}
        for name, module in self.transformer.named_modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                merged[f"{name}.weight"] = (base.weight + delta).detach()
                if getattr(base, "bias", None) is not None:
                    merged[f"{name}.bias"] = base.bias.detach()
        for key, value in self.transformer.state_dict().items():
            if "lora_" in key:
                continue
            merged.setdefault(key.replace(".base_layer", ""), value.detach())
        plain = WanTransformer3DModel.from_config(self.transformer.config)
        plain.load_state_dict(merged, strict=True)
        return plain.to(device=self.null_text.device)

    def merge_lora(self) -> None:
        """Replace the peft-wrapped transformer by its merged plain copy (before hashing/saving)."""
        if not self.has_lora():
            return
        plain = self.plain_transformer()
        plain.requires_grad_(False)
        self.transformer = plain
        if self.adapter is not None:
            self.adapter.attach(plain)
        self.tuning = "frozen"

    # ------------------------------------------------------------------ the velocity model
    def _wan_forward(self, context: torch.Tensor | None):  # noqa: ANN202 - returns a closure
        def wan_model(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            text = self.null_text.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            if context is None or self.adapter is None:
                return self.transformer(x, timestep, text, return_dict=False)[0]
            if self.transformer.gradient_checkpointing and torch.is_grad_enabled():
                raise RuntimeError(
                    "the DiT's block-level gradient checkpointing would recompute blocks "
                    "without the adapter's "
                    "context; use Refiner.checkpoint_steps instead"
                )
            with self.adapter.conditioning(context, timestep):
                return self.transformer(x, timestep, text, return_dict=False)[0]

        return wan_model

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor | None = None) -> torch.Tensor:
        """v(x_t, t) = dx_t/dt in the project convention (t = 1 data), conditioned on ``context``.

        The conversion from diffusers' Wan convention happens in
        :func:`gnvc.refiner.flow.wan_to_project_velocity`, nowhere else. Latent sequences longer
        than ``max_latent_frames`` are evaluated in overlapping windows whose velocities are
        blended, so the whole sequence is still integrated jointly.
        """
        if x_t.ndim != 5:
            raise ValueError(f"latents must be (B, C, F, h, w), got {tuple(x_t.shape)}")
        ph, pw = self.transformer.config.patch_size[1:]
        if x_t.shape[-2] % ph or x_t.shape[-1] % pw:
            raise ValueError(f"latent size {tuple(x_t.shape[-2:])} is not a multiple of the DiT patch {ph}x{pw}")
        if context is not None and context.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"context {tuple(context.shape)} and latents {tuple(x_t.shape)} differ in (F, h, w)")
        t = expand_t(t, x_t)
        frames = x_t.shape[2]
        if self.max_latent_frames <= 0 or frames <= self.max_latent_frames:
            return wan_to_project_velocity(self._wan_forward(context), x_t, t)
        out = torch.zeros_like(x_t)
        weight = torch.zeros(frames, dtype=x_t.dtype, device=x_t.device)
        for start, stop in window_bounds(frames, self.max_latent_frames, self.window_overlap):
            ramp = _window_weights(start, stop, frames, self.window_overlap, x_t)
            ctx = context[:, :, start:stop] if context is not None else None
            v = wan_to_project_velocity(self._wan_forward(ctx), x_t[:, :, start:stop], t)
            out[:, :, start:stop] += v * ramp.view(1, 1, -1, 1, 1)
            weight[start:stop] += ramp
        return out / weight.view(1, 1, -1, 1, 1)

    def integrate(self, x_start: torch.Tensor, context: torch.Tensor | None, *, t_n: float, steps: int) -> torch.Tensor:
        """L Euler steps from tN to 1; with :attr:`checkpoint_steps` and grad enabled, each velocity
        evaluation is recomputed in the backward pass (memory of one step instead of L)."""

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.velocity(x, t, context)

        wrapper = None
        if self.checkpoint_steps and torch.is_grad_enabled():

            def wrapper(fn, x, t):  # noqa: ANN001, ANN202
                return checkpoint(fn, x, t, use_reentrant=False)

        return euler_integrate(velocity, x_start, t_n, steps, step_wrapper=wrapper)

    def refine(
        self, x_c: torch.Tensor, context: torch.Tensor | None, *, t_n: float, steps: int, seed: int
    ) -> torch.Tensor:
        """Decoder-side refinement: x_{tN} = tN·x_c + (1 − tN)·x0, x0 from ``seed``; L Euler steps.

        ``steps == 0`` returns ``x_c`` unchanged (decode without refinement).
        """
        if steps == 0:
            return x_c
        x0 = noise_like(x_c, seed)
        return self.integrate(start_point(x_c, x0, t_n), context, t_n=t_n, steps=steps)


def window_bounds(frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Overlapping [start, stop) windows of at most ``window`` latent frames covering ``frames``."""
    if window <= overlap:
        raise ConfigError(f"window ({window}) must exceed its overlap ({overlap})")
    bounds, start = [], 0
    while True:
        stop = min(start + window, frames)
        bounds.append((max(0, stop - window), stop))
        if stop == frames:
            return bounds
        start = stop - overlap


def _window_weights(start: int, stop: int, frames: int, overlap: int, like: torch.Tensor) -> torch.Tensor:
    """Linear cross-fade weights over a window's overlapping ends (1 inside), never zero."""
    n = stop - start
    w = torch.ones(n, dtype=like.dtype, device=like.device)
    ramp = torch.arange(1, overlap + 1, dtype=like.dtype, device=like.device) / (overlap + 1)
    k = min(overlap, n)
    if start > 0:
        w[:k] = ramp[:k]
    if stop < frames:
        w[n - k :] = torch.minimum(w[n - k :], ramp[:k].flip(0))
    return w


def load_transformer(path: str | Path) -> WanTransformer3DModel:
    """A WanTransformer3DModel from a local diffusers directory (nothing is downloaded)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise WeightsError(f"{path}: no WanTransformer3DModel here (config.json missing)")
    try:
        return WanTransformer3DModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: the DiT weights could not be loaded ({e})") from None
