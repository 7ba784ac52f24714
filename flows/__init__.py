"""Prefect 3 flows for the gnvc pipeline, fanned out on Ray (``prefect-ray``'s ``RayTaskRunner``).

- :mod:`flows.pipeline` — every stage in order (``python -m flows.pipeline``), training stages as
  Ray tasks with GPU requests, latents and evaluation fanned out, artifacts published to the store.
- :mod:`flows.latents` — latent encoding, one Ray task per clip shard.
- :mod:`flows.evaluate` — evaluation, one Ray task per (video, method, rate point) job.

The flows call the same functions as ``gnvc stage`` and ``dvc repro`` (``gnvc.stages.*``,
``gnvc.data.latents``); see docs/pipeline.md.
"""

from flows.common import apply_offline_env

apply_offline_env()
