"""The flow-matching convention, the Euler sampler and the one Wan conversion."""

from __future__ import annotations

import pytest
import torch

from gnvc.refiner.flow import (
    euler_integrate,
    interpolate,
    project_t_to_wan_timestep,
    start_point,
    straight_path,
    target_velocity,
    time_grid,
    wan_to_project_velocity,
)


@pytest.mark.parametrize("t_n", [0.0, 0.3, 0.7, 0.95])
@pytest.mark.parametrize("steps", [1, 2, 5, 17])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_euler_with_ideal_target_velocity_lands_on_x1(t_n: float, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = (2, 16, 3, 4, 6)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64)
    # x_c anywhere (large codec error too) and any noise.
    x_c = x1 + 3.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    v = target_velocity(x1, x0, x_c, t_n)
    x_start = start_point(x_c, x0, t_n)
    out = euler_integrate(lambda x, t: v, x_start, t_n, steps)
    torch.testing.assert_close(out, x1, rtol=0, atol=1e-10)
    # The same in float32, the dtype the codec runs in.
    out32 = euler_integrate(lambda x, t: v.float(), x_start.float(), t_n, steps)
    torch.testing.assert_close(out32, x1.float(), rtol=0, atol=5e-5)


def test_target_velocity_is_pretrain_velocity_without_codec_error() -> None:
    x1, x0 = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(target_velocity(x1, x0, x1.clone(), 0.7), x1 - x0)


def test_straight_path_endpoints() -> None:
    x1, x0, x_c = torch.randn(3, 2, 5), torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    t_n = 0.6
    v = target_velocity(x1, x0, x_c, t_n)
    xs = start_point(x_c, x0, t_n)
    torch.testing.assert_close(straight_path(xs, v, t_n, t_n), xs)
    torch.testing.assert_close(straight_path(xs, v, t_n, 1.0), x1, rtol=0, atol=1e-5)


def test_time_grid_matches_wan_timesteps() -> None:
    grid = time_grid(0.7, 5)
    assert grid[0] == 0.7 and grid[-1] == 1.0 and len(grid) == 6
    ts = project_t_to_wan_timestep(torch.tensor(grid[:-1]))
    torch.testing.assert_close(ts, torch.tensor([300.0, 240.0, 180.0, 120.0, 60.0]), rtol=0, atol=1e-3)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.93])
def test_wan_convention_model_yields_project_velocity(t: float) -> None:
    """A model that does what a Wan DiT is trained to do — predict x0 − x1 from x = σ·x0 + (1 − σ)·x1
    at timestep 1000·σ — gives the project's v = x1 − x0 after the conversion.

    The oracle recovers the noise from its input and the timestep it is given, so a wrong σ, a
    wrong timestep scale or a wrong sign in the conversion all make the result wrong.
    """
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 16, 2, 4, 4, generator=g, dtype=torch.float64)
    x0 = torch.randn(2, 16, 2, 4, 4, generator=g, dtype=torch.float64)
    calls = []

    def wan_oracle(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        assert timestep.ndim == 1 and timestep.shape[0] == x.shape[0]
        sigma = (timestep / 1000.0).to(x.dtype).view(-1, 1, 1, 1, 1)
        noise = (x - (1 - sigma) * x1) / sigma  # x = σ·noise + (1 − σ)·data
        calls.append(timestep)
        return noise - x1  # Wan's flow-matching target

    x_t = interpolate(x0, x1, t)
    v = wan_to_project_velocity(wan_oracle, x_t, torch.tensor(t))
    # The timestep is float32 (what the DiT takes): float32 precision.
    torch.testing.assert_close(v, x1 - x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(calls[0], torch.full((2,), 1000.0 * (1 - t), dtype=torch.float32))


def test_time_grid_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        time_grid(1.0, 5)
    with pytest.raises(ValueError):
        time_grid(0.7, 0)
