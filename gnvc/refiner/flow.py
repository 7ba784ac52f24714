"""Flow matching in this project's convention, and the ONE conversion to diffusers' Wan convention.

Project convention (DESIGN §1): x_t = t·x1 + (1 − t)·x0, x1 is data, x0 ~ N(0, I), the velocity is
v = dx_t/dt = x1 − x0 and t = 1 is data. diffusers' Wan models use σ = 1 − t (σ = 1 is noise),
``timestep = 1000·σ`` and predict v_wan = x0 − x1 = −v. :func:`wan_to_project_velocity` is the
only place in the code base that knows this; everything else speaks the project convention.

Refinement starts from the decoded latents x_c instead of data: x_{tN} = tN·x_c + (1 − tN)·x0,
and integrates dx/dt = v(x, t) from tN to 1 with L deterministic Euler steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WAN_NUM_TRAIN_TIMESTEPS = 1000.0

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v(x_t, t) with t a (B,) tensor, in the project convention."""


def expand_t(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A time as a (B,) float tensor on ``like``'s device (scalars are broadcast over the batch)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.shape != (like.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({like.shape[0]},), got {tuple(t.shape)}")
    return t


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """x_t = t·x1 + (1 − t)·x0 (project convention, t = 1 is data)."""
    tb = _bcast(expand_t(t, x1), x1)
    return tb * x1 + (1 - tb) * x0


def start_point(x_c: torch.Tensor, x0: torch.Tensor, t_n: float) -> torch.Tensor:
    """x_{tN} = tN·x_c + (1 − tN)·x0: the decoded latents, partially re-noised."""
    return t_n * x_c + (1 - t_n) * x0


def target_velocity(x1: torch.Tensor, x0: torch.Tensor, x_c: torch.Tensor, t_n: float) -> torch.Tensor:
    """v_τ = (x1 − x0) − tN/(1 − tN)·(x_c − x1): the constant velocity of the straight path x_{tN} → x1.

    With e = x_c − x1 this is v_pretrain − Δv_fine; integrating it from tN to 1 lands on x1 exactly,
    which is what the CFM term of Stage I teaches the adapter.
    """
    if not 0.0 <= t_n < 1.0:
        raise ValueError(f"t_n must be in [0, 1), got {t_n}")
    return (x1 - x0) - (t_n / (1 - t_n)) * (x_c - x1)


def straight_path(x_start: torch.Tensor, v: torch.Tensor, t_n: float, tau: torch.Tensor | float) -> torch.Tensor:
    """The point at time τ ∈ [tN, 1] on the straight path x_{tN} + (τ − tN)·v."""
    tb = _bcast(expand_t(tau, x_start), x_start)
    return x_start + (tb - t_n) * v


def time_grid(t_n: float, steps: int) -> list[float]:
    """The L + 1 uniformly spaced times tN = t_0 < … < t_L = 1 of the Euler integration."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if not 0.0 <= t_n < 1.0:
        raise ValueError(f"t_n must be in [0, 1), got {t_n}")
    return [t_n + (1.0 - t_n) * k / steps for k in range(steps)] + [1.0]


def euler_integrate(
    velocity: VelocityFn,
    x_start: torch.Tensor,
    t_n: float,
    steps: int,
    *,
    step_wrapper: Callable[[VelocityFn, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Deterministic Euler from tN to 1: x ← x + (t_{k+1} − t_k)·v(x, t_k).

    ``step_wrapper(velocity, x, t)`` lets training wrap each velocity evaluation (gradient
    checkpointing) without a second copy of the loop.
    """
    grid = time_grid(t_n, steps)
    x = x_start
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        t = expand_t(t0, x)
        v = step_wrapper(velocity, x, t) if step_wrapper is not None else velocity(x, t)
        x = x + (t1 - t0) * v.to(x.dtype)
    return x


# ---------------------------------------------------------------------------------------------
# The one conversion between the project convention and diffusers' Wan convention.
# ---------------------------------------------------------------------------------------------
def project_t_to_wan_timestep(t: torch.Tensor) -> torch.Tensor:
    """σ = 1 − t, timestep = 1000·σ, as the (B,) float tensor the Wan DiT requires."""
    return (1.0 - t.float()) * WAN_NUM_TRAIN_TIMESTEPS


def wan_to_project_velocity(
    wan_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Evaluate a Wan-convention model at project time ``t`` and return the project velocity.

    ``wan_model(x, timestep)`` is called with the *same* latents (x_t = t·x1 + (1 − t)·x0 is
    x = σ·x0 + (1 − σ)·x1 with σ = 1 − t, so no rescaling) and timestep 1000·(1 − t); it predicts
    x0 − x1, whose negation is this project's v = x1 − x0.
    """
    t = expand_t(t, x_t)
    return -wan_model(x_t, project_t_to_wan_timestep(t))
