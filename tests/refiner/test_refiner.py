"""The Refiner: adapter at initialisation, save/load, seeds, LoRA, windows, checkpointing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gnvc.refiner import Refiner, wan_to_project_velocity, window_bounds


def _inputs(seed: int = 0, frames: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 16, frames, 4, 6, generator=g), torch.randn(2, 8, frames, 4, 6, generator=g)


def _perturb(module: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_velocity_goes_through_the_wan_conversion(refiner_cfg: dict[str, Any]) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0).eval()
    x, _ = _inputs()
    t = torch.tensor([0.7, 0.85])
    text = r.null_text.unsqueeze(0).expand(2, -1, -1)
    with torch.no_grad():
        v = r.velocity(x, t)
        raw = r.transformer(x, 1000 * (1 - t), text, return_dict=False)[0]
        ref = wan_to_project_velocity(lambda xx, ts: r.transformer(xx, ts, text, return_dict=False)[0], x, t)
    torch.testing.assert_close(v, -raw)
    torch.testing.assert_close(v, ref)


def test_adapter_at_init_changes_nothing(refiner_cfg: dict[str, Any]) -> None:
    with_adapter = Refiner.from_config(refiner_cfg, seed=0).eval()
    bare_cfg = dict(refiner_cfg, adapter=None)
    frozen = Refiner.from_config(bare_cfg, seed=0).eval()
    frozen.transformer.load_state_dict(with_adapter.transformer.state_dict())
    frozen.null_text.copy_(with_adapter.null_text)
    x_c, ctx = _inputs()
    with torch.no_grad():
        refined = with_adapter.refine(x_c, ctx, t_n=0.7, steps=5, seed=11)
        base = frozen.refine(x_c, None, t_n=0.7, steps=5, seed=11)
        unconditioned = with_adapter.refine(x_c, None, t_n=0.7, steps=5, seed=11)
    torch.testing.assert_close(refined, base, rtol=0, atol=0)
    torch.testing.assert_close(refined, unconditioned, rtol=0, atol=0)
    assert not torch.equal(refined, x_c)
    # The comparison can fail: a trained (non-zero) adapter does change the output.
    _perturb(with_adapter.adapter.block_proj)
    with torch.no_grad():
        changed = with_adapter.refine(x_c, ctx, t_n=0.7, steps=5, seed=11)
    assert (changed - base).abs().max() > 1e-3


def test_steps_zero_is_identity_and_seed_matters(refiner_cfg: dict[str, Any]) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0).eval()
    _perturb(r.adapter.block_proj)
    x_c, ctx = _inputs()
    with torch.no_grad():
        assert r.refine(x_c, ctx, t_n=0.7, steps=0, seed=1) is x_c
        a = r.refine(x_c, ctx, t_n=0.7, steps=5, seed=1)
        b = r.refine(x_c, ctx, t_n=0.7, steps=5, seed=1)
        c = r.refine(x_c, ctx, t_n=0.7, steps=5, seed=2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_save_load_round_trip(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0).eval()
    _perturb(r.adapter)
    r.save_pretrained(tmp_path / "refiner")
    assert (tmp_path / "refiner" / "transformer" / "config.json").is_file()
    loaded = Refiner.from_pretrained(tmp_path / "refiner")
    x_c, ctx = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.refine(x_c, ctx, t_n=0.7, steps=3, seed=5),
            r.refine(x_c, ctx, t_n=0.7, steps=3, seed=5),
            rtol=0,
            atol=0,
        )
    assert torch.equal(loaded.null_text, r.null_text)
    assert sorted(loaded.state_dict()) == sorted(r.state_dict())


def test_lora_starts_neutral_and_merges_exactly(refiner_cfg: dict[str, Any], tmp_path: Path) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0).eval()
    x_c, ctx = _inputs()
    with torch.no_grad():
        before = r.velocity(x_c, 0.8, ctx)
    params = r.set_tuning("lora", {"rank": 4})
    names = {n for n, p in r.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in names) and any(n.startswith("adapter.") for n in names)
    assert not any(n.startswith("transformer.") and "lora_" not in n for n in names)
    assert len(params) == len(names)
    with torch.no_grad():
        torch.testing.assert_close(r.velocity(x_c, 0.8, ctx), before, rtol=0, atol=0)
        for n, p in r.transformer.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
        lora_v = r.velocity(x_c, 0.8, ctx)
    assert (lora_v - before).abs().max() > 1e-3
    r.save_pretrained(tmp_path / "refiner")
    loaded = Refiner.from_pretrained(tmp_path / "refiner")
    assert not loaded.has_lora()
    with torch.no_grad():
        torch.testing.assert_close(loaded.velocity(x_c, 0.8, ctx), lora_v, rtol=1e-4, atol=1e-5)
    r.merge_lora()
    with torch.no_grad():
        torch.testing.assert_close(r.velocity(x_c, 0.8, ctx), lora_v, rtol=1e-4, atol=1e-5)


def test_frozen_tuning_trains_only_the_adapter(refiner_cfg: dict[str, Any]) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0)
    params = r.set_tuning("frozen")
    assert {id(p) for p in params} == {id(p) for p in r.adapter.parameters()}
    full = r.set_tuning("full")
    assert len(full) == len(list(r.transformer.parameters())) + len(list(r.adapter.parameters()))


def test_windowed_velocity(refiner_cfg: dict[str, Any]) -> None:
    assert window_bounds(5, 5, 2) == [(0, 5)]
    assert window_bounds(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]
    r = Refiner.from_config(refiner_cfg, seed=0).eval()
    x, ctx = _inputs(frames=7)
    with torch.no_grad():
        full = r.velocity(x, 0.8, ctx)
        r.max_latent_frames = 7
        torch.testing.assert_close(r.velocity(x, 0.8, ctx), full, rtol=0, atol=0)
        r.max_latent_frames, r.window_overlap = 3, 1
        windowed = r.velocity(x, 0.8, ctx)
    assert windowed.shape == full.shape and torch.isfinite(windowed).all()
    # The first window's frames that no other window covers are that window's own velocity.
    with torch.no_grad():
        r.max_latent_frames = 0
        first = r.velocity(x[:, :, :3], 0.8, ctx[:, :, :3])
    torch.testing.assert_close(windowed[:, :, :2], first[:, :, :2])


def test_step_checkpointing_gives_the_same_gradients(refiner_cfg: dict[str, Any]) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0)
    _perturb(r.adapter.block_proj)
    r.set_tuning("frozen")
    x_c, ctx = _inputs()
    x_c.requires_grad_(True)

    def grads(checkpoint_steps: bool) -> list[torch.Tensor]:
        r.zero_grad()
        x_c.grad = None
        r.checkpoint_steps = checkpoint_steps
        r.refine(x_c, ctx, t_n=0.7, steps=3, seed=0).square().mean().backward()
        return [x_c.grad.clone()] + [p.grad.clone() for p in r.adapter.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_block_checkpointing_with_adapter_is_refused(refiner_cfg: dict[str, Any]) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0)
    r.transformer.enable_gradient_checkpointing()
    x_c, ctx = _inputs()
    with pytest.raises(RuntimeError, match="checkpoint"):
        r.velocity(x_c, 0.8, ctx)


def test_geometry_errors(refiner_cfg: dict[str, Any]) -> None:
    r = Refiner.from_config(refiner_cfg, seed=0)
    with pytest.raises(ValueError, match="patch"):
        r.velocity(torch.randn(1, 16, 2, 5, 4), 0.8)
    with pytest.raises(ValueError, match="differ"):
        r.velocity(torch.randn(1, 16, 2, 4, 4), 0.8, torch.randn(1, 8, 3, 4, 4))
