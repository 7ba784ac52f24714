"""Stage ``latents``: VAE-encode the clip shards into latent shards (``latents:`` section of params.yaml).

Reads the VAE from the model directory the ``vae`` stage wrote (``latents.vae``, default
``build/{profile}/vae``); see :mod:`gnvc.data.latents` for the work and ``docs/data.md`` for the
shard schema. The Prefect flow fans the same per-shard jobs out over Ray (``flows/latents.py``).
"""

from __future__ import annotations

from typing import Any

from gnvc.data.latents import encode_latents
from gnvc.errors import ConfigError


def run(params: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Write ``latents.out_dir`` (latent shards + manifest); return counts, throughput and wall time."""
    section = params.get("latents")
    if not isinstance(section, dict):
        raise ConfigError("params.yaml has no 'latents:' section")
    return encode_latents(section, profile=str(params.get("profile", "tiny")), progress=progress)
