"""The generative decoder: flow-matching refinement of decoded latents with Wan's video DiT.

- :mod:`gnvc.refiner.flow`: the project's flow-matching convention, the Euler sampler, the
  Stage I target velocity and the one conversion to diffusers' Wan convention.
- :mod:`gnvc.refiner.adapter`: the zero-initialised compression-aware conditional adapter.
- :mod:`gnvc.refiner.model`: :class:`Refiner` (DiT + null text + adapter, save/load, refine).
"""

from gnvc.refiner.adapter import ContextAdapter
from gnvc.refiner.flow import (
    euler_integrate,
    interpolate,
    start_point,
    straight_path,
    target_velocity,
    time_grid,
    wan_to_project_velocity,
)
from gnvc.refiner.model import Refiner, load_transformer, noise_like, window_bounds

__all__ = [
    "ContextAdapter",
    "Refiner",
    "euler_integrate",
    "interpolate",
    "load_transformer",
    "noise_like",
    "start_point",
    "straight_path",
    "target_velocity",
    "time_grid",
    "wan_to_project_velocity",
    "window_bounds",
]
