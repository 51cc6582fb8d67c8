"""The SLAM distillation math against diffusers' schedulers and the forward process it assumes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.diffusion.families import family
from nodes.training import consistency as cd

SD15_SCHEDULER = family("sd15").scheduler_defaults


@pytest.fixture(scope="module")
def grid() -> cd.SolverGrid:
    return cd.SolverGrid.from_scheduler_config(SD15_SCHEDULER)


def test_grid_is_lcm_distillation_grid(grid: cd.SolverGrid) -> None:
    from diffusers import LCMScheduler

    assert grid.skip == 20
    assert grid.timesteps[0] == 19 and grid.timesteps[-1] == 999 and len(grid.timesteps) == 50
    lcm = LCMScheduler.from_config(SD15_SCHEDULER, timestep_spacing="trailing")
    lcm.set_timesteps(4)
    assert set(lcm.timesteps.tolist()) <= set(grid.timesteps.tolist())  # SLAMSampler's 999, 759, 499, 259
    start, prev = grid.pick(256, torch.Generator().manual_seed(0))
    assert set(start.tolist()) <= set(grid.timesteps.tolist())
    assert torch.equal(prev, (start - 20).clamp(min=0))


def test_grid_rejects_a_grid_longer_than_the_schedule() -> None:
    with pytest.raises(ValueError, match="1 to 1000"):
        cd.SolverGrid.from_scheduler_config(SD15_SCHEDULER, grid=2000)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddim_step_equals_diffusers_ddim(grid: cd.SolverGrid, prediction: str) -> None:
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(SD15_SCHEDULER, set_alpha_to_one=False, prediction_type=prediction)
    ddim.set_timesteps(50)
    gen = torch.Generator().manual_seed(1)
    for t in (999, 519, 19):  # the top, the middle and the last step (whose previous ᾱ is ᾱ_0)
        x = torch.randn(2, 4, 8, 8, generator=gen)
        out = torch.randn(2, 4, 8, 8, generator=gen)
        start = torch.tensor([t, t])
        alpha, sigma = grid.alpha_sigma(start, x)
        alpha_p, sigma_p = grid.alpha_sigma((start - grid.skip).clamp(min=0), x)
        x0 = cd.predicted_x0(out, x, alpha, sigma, prediction)
        eps = cd.predicted_noise(out, x, alpha, sigma, prediction)
        ours = cd.ddim_step(x0, eps, alpha_p, sigma_p)
        theirs = ddim.step(out, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_consistency_output_is_what_lcm_sampling_computes(grid: cd.SolverGrid) -> None:
    """The student is trained on the parameterisation SLAMSampler (LCMScheduler) samples with."""
    from diffusers import LCMScheduler

    lcm = LCMScheduler.from_config(SD15_SCHEDULER, timestep_spacing="trailing")
    lcm.set_timesteps(4)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    out = torch.randn(1, 4, 8, 8, generator=gen)
    t = int(lcm.timesteps[1])
    denoised = lcm.step(out, t, x, generator=gen).denoised
    start = torch.tensor([t])
    alpha, sigma = grid.alpha_sigma(start, x)
    c_skip, c_out = grid.boundary_scalings(start, x)
    ours = cd.consistency_output(x, cd.predicted_x0(out, x, alpha, sigma, "epsilon"), c_skip, c_out)
    torch.testing.assert_close(ours, denoised, atol=1e-5, rtol=1e-5)
    c0_skip, c0_out = grid.boundary_scalings(torch.tensor([0]), x)
    assert float(c0_skip) == 1.0 and float(c0_out) == 0.0  # f(x, 0) = x


def test_sub_path_ends(grid: cd.SolverGrid) -> None:
    gen = torch.Generator().manual_seed(3)
    x_t, x_prev = torch.randn(2, 1, 4, 8, 8, generator=gen)
    start = torch.tensor([499])
    a_t, s_t = grid.alpha_sigma(start, x_t)
    a_p, s_p = grid.alpha_sigma(start - 20, x_t)
    one, zero = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    torch.testing.assert_close(cd.sub_path_point(x_t, x_prev, one, a_t, a_p), x_t)
    torch.testing.assert_close(cd.sub_path_point(x_t, x_prev, zero, a_t, a_p), x_prev * a_t / a_p)
    torch.testing.assert_close(cd.sub_path_sigma(a_t, a_p, s_p, one), s_t)
    torch.testing.assert_close(cd.sub_path_sigma(a_t, a_p, s_p, zero), s_p * a_t / a_p)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.8, 1.0])
def test_sub_path_noise_level_matches_the_forward_process(grid: cd.SolverGrid, gamma: float) -> None:
    """x_{t-k} and x_t drawn from the forward process: the sub-path point has signal α_t·x0 and
    noise of standard deviation σ_γ, so the x0 estimate from the true noise is exact."""
    gen = torch.Generator().manual_seed(4)
    n = 200_000
    x0 = torch.randn(n, 1, 1, 1, generator=gen)
    start = torch.full((n,), 259)
    a_t, _ = grid.alpha_sigma(start, x0)
    a_p, s_p = grid.alpha_sigma(start - 20, x0)
    ratio = a_t / a_p
    x_prev = a_p * x0 + s_p * torch.randn(n, 1, 1, 1, generator=gen)
    x_t = ratio * x_prev + (1 - ratio ** 2).sqrt() * torch.randn(n, 1, 1, 1, generator=gen)
    g = torch.full((n, 1, 1, 1), gamma)
    x_g = cd.sub_path_point(x_t, x_prev, g, a_t, a_p)
    noise = x_g - a_t * x0
    sigma_g = cd.sub_path_sigma(a_t, a_p, s_p, g)
    assert abs(float(noise.std()) / float(sigma_g[0]) - 1) < 0.01
    torch.testing.assert_close(cd.predicted_x0(noise / sigma_g, x_g, a_t, sigma_g, "epsilon"), x0,
                               atol=1e-4, rtol=1e-4)
    # v at the rescaled point x / c (c² = α² + σ²) gives the same x0.
    c = (a_t ** 2 + sigma_g ** 2).sqrt()
    v = (a_t / c) * (noise / sigma_g) - (sigma_g / c) * x0
    torch.testing.assert_close(cd.predicted_x0(v, x_g, a_t, sigma_g, "v_prediction"), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cd.predicted_noise(v, x_g, a_t, sigma_g, "v_prediction"), noise / sigma_g,
                               atol=1e-4, rtol=1e-4)


def test_guidance_is_cfg_and_lcm_w_is_scale_minus_one() -> None:
    gen = torch.Generator().manual_seed(5)
    cond, uncond = torch.randn(2, 3, 4, generator=gen)
    s = 7.5
    torch.testing.assert_close(cd.guided(cond, uncond, s), cond + (s - 1) * (cond - uncond))
    torch.testing.assert_close(cd.guided(cond, uncond, 1.0), cond)


def test_sample_guidance_range() -> None:
    w = cd.sample_guidance(1000, 3.0, 15.0, torch.Generator().manual_seed(0))
    assert float(w.min()) >= 3.0 and float(w.max()) <= 15.0 and float(w.std()) > 3.0
    assert torch.equal(cd.sample_guidance(4, 2.0, 2.0), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="guidance_min 5.0 is above guidance_max 2.0"):
        cd.sample_guidance(4, 5.0, 2.0)


def test_losses() -> None:
    gen = torch.Generator().manual_seed(6)
    p, t = torch.randn(2, 2, 4, 8, 8, generator=gen)
    torch.testing.assert_close(cd.consistency_loss(p, t, "l2"), F.mse_loss(p, t))
    small = torch.full((10,), 1e-5)
    # pseudo-Huber is quadratic (d²/2c) near zero and linear (|d| - c) far from it
    torch.testing.assert_close(cd.consistency_loss(small, torch.zeros(10), "huber", 0.001),
                               torch.tensor(1e-10 / 0.002), rtol=1e-2, atol=0)
    torch.testing.assert_close(cd.consistency_loss(torch.full((10,), 3.0), torch.zeros(10), "huber", 0.001),
                               torch.tensor(3.0 - 0.001), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="loss 'l1' is not supported"):
        cd.consistency_loss(p, t, "l1")
    with pytest.raises(ValueError, match="prediction type 'flow'"):
        cd.predicted_x0(p, t, torch.ones(1), torch.ones(1), "flow")
