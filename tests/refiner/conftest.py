"""Shared fixtures of the refiner tests: a tiny Wan DiT config (a few hundred k parameters)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

TINY_REFINER: dict[str, Any] = {
    "transformer": {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 24,
        "freq_dim": 32,
        "ffn_dim": 64,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
    },
    "null_text": {"length": 4, "init": "normal"},
    "adapter": {"context_channels": 8, "hidden_dim": 16, "time_freq_dim": 16},
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def refiner_cfg() -> dict[str, Any]:
    return copy.deepcopy(TINY_REFINER)
