"""Diffusion processes of DiffUp: plain DDPM (diffusers) and the condition-offset process (Eq. 13).

Notation: betas ``b_t`` (t = 0 .. T-1), ``a_t = 1 - b_t``, ``ab_t = prod_{s <= t} a_s``. ``m`` is the
condition mean, a map ``[B, 1, R, R]`` in [-1, 1] derived from the priors (``DiffUp``: ``offset_scale
* (2 p - 1)`` with ``p`` the fused prior probability).

Condition-offset process (the paper's Eq. 13 leaves the offset open; this is our design)::

    q(x_t | x_{t-1}, c) = N(sqrt(a_t) x_{t-1} + (1 - sqrt(a_t)) m,  b_t I)
    q(x_t | x_0, c)     = N(sqrt(ab_t) x_0 + (1 - sqrt(ab_t)) m,  (1 - ab_t) I)

i.e. ``y_t = x_t - m`` is a plain DDPM started at ``y_0 = x_0 - m``: the chain drifts toward the
prior-derived mean instead of 0, so ``x_T ~ N(m, I)`` and sampling starts *at the prior* plus noise
(the paper's "priors as noisy intermediates"). The posterior is the DDPM posterior shifted by ``m``::

    q(x_{t-1} | x_t, x_0, c) = N(m + c0_t (x_0 - m) + ct_t (x_t - m),  bt_t I),
    c0_t = sqrt(ab_{t-1}) b_t / (1 - ab_t),  ct_t = sqrt(a_t) (1 - ab_{t-1}) / (1 - ab_t),
    bt_t = (1 - ab_{t-1}) b_t / (1 - ab_t),

and DDIM (eta) moves ``y`` exactly as plain DDIM does. With ``m = 0`` both are the plain process;
``tests/test_diffup.py`` checks that against diffusers' ``DDPMScheduler`` / ``DDIMScheduler``.

Model outputs: ``epsilon`` (Eq. 8) or ``sample`` (the clean mask ``x_0``).

Schedule: ``linear`` betas scaled to the number of steps (``1e-4 * 1000/T`` .. ``0.02 * 1000/T``, the
improved-DDPM rule, so ``ab_{T-1}`` ~ e^-10 at T = 250 as at T = 1000) or diffusers' ``cosine``
(``squaredcos_cap_v2``). diffusers is imported on first use (it is slow to import).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fssbench.errors import UserError

PROCESSES = ("offset", "ddpm")
PREDICTIONS = ("epsilon", "sample")
SCHEDULES = ("linear", "cosine")


def make_betas(steps: int, schedule: str = "linear") -> torch.Tensor:
    """Betas ``[T]`` (float64 computed, float32 returned)."""
    if schedule == "linear":
        scale = 1000.0 / steps
        return torch.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=torch.float64).clamp(max=0.999).float()
    if schedule == "cosine":
        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)], dtype=torch.float32)
    raise UserError(f"diffup option beta_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def _gather(v: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v[t]`` shaped to broadcast against ``like`` (``t``: ``[N]`` long or an int)."""
    t = torch.as_tensor(t, device=v.device).long()
    out = v[t].to(device=like.device, dtype=torch.float32)
    return out.view(-1, *([1] * (like.dim() - 1))) if out.dim() else out


class OffsetScheduler:
    """The condition-offset process: forward noising, DDPM posterior step and DDIM step.

    The small API the sampler uses (``set_timesteps``, ``timesteps``, ``step``) matches diffusers'
    schedulers, with one more argument, ``offset`` (the condition mean ``m``).
    """

    def __init__(self, betas: torch.Tensor, prediction: str = "epsilon") -> None:
        if prediction not in PREDICTIONS:
            raise UserError(f"diffup option prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        self.betas = betas.double()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_train_timesteps = len(betas)
        self.prediction = prediction
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)
        self.num_inference_steps = self.num_train_timesteps

    # --- forward process -------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """``x_t = sqrt(ab_t) x_0 + (1 - sqrt(ab_t)) m + sqrt(1 - ab_t) noise``."""
        ab = _gather(self.alphas_cumprod, t, x0)
        m = 0.0 if offset is None else offset
        return ab.sqrt() * x0 + (1 - ab.sqrt()) * m + (1 - ab).sqrt() * noise

    def x0_eps(self, out: torch.Tensor, t: Any, sample: torch.Tensor, offset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0 estimate, epsilon estimate) from the model output at step ``t``."""
        ab = _gather(self.alphas_cumprod, t, sample)
        m = 0.0 if offset is None else offset
        y = sample - m
        if self.prediction == "epsilon":
            eps = out
            x0 = m + (y - (1 - ab).sqrt() * eps) / ab.sqrt()
        else:
            x0 = out
            eps = (y - ab.sqrt() * (x0 - m)) / (1 - ab).sqrt()
        return x0, eps

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: int, offset: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """Mean and variance of ``q(x_{t-1} | x_t, x_0, c)`` (``t >= 1``; at ``t = 0`` it is ``x_0``, variance 0)."""
        m = 0.0 if offset is None else offset
        if t == 0:
            return x0, 0.0
        ab, ab_prev = float(self.alphas_cumprod[t]), float(self.alphas_cumprod[t - 1])
        b, a = float(self.betas[t]), float(self.alphas[t])
        c0 = math.sqrt(ab_prev) * b / (1 - ab)
        ct = math.sqrt(a) * (1 - ab_prev) / (1 - ab)
        return m + c0 * (x0 - m) + ct * (xt - m), (1 - ab_prev) * b / (1 - ab)

    def ddpm_step(self, out: torch.Tensor, t: int, sample: torch.Tensor, offset: torch.Tensor | None = None,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral step ``t -> t-1`` with the posterior at the predicted ``x_0`` (``noise``: the
        standard normal draw; zero gives the posterior mean)."""
        x0, _ = self.x0_eps(out, t, sample, offset)
        mean, var = self.posterior(x0, sample, int(t), offset)
        if var == 0.0 or noise is None:
            return mean
        return mean + math.sqrt(max(var, 1e-20)) * noise

    # --- DDIM sampling ---------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int) -> None:
        """diffusers' ``leading`` spacing: ``T//n * (n-1), ..., T//n, 0``."""
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise UserError(f"diffup sampling_steps must be in 1..{self.num_train_timesteps}, got {num_inference_steps}")
        ratio = self.num_train_timesteps // n
        self.num_inference_steps = n
        self.timesteps = (torch.arange(0, n) * ratio).flip(0)

    def step(self, out: torch.Tensor, t: int, sample: torch.Tensor, offset: torch.Tensor | None = None,
             eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One DDIM step from ``t`` to ``t - T//n`` (``ab`` = 1 below 0) in the shifted coordinates."""
        t = int(t)
        prev = t - self.num_train_timesteps // self.num_inference_steps
        ab = float(self.alphas_cumprod[t])
        ab_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else 1.0
        x0, eps = self.x0_eps(out, t, sample, offset)
        m = 0.0 if offset is None else offset
        sigma = eta * math.sqrt(max((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev), 0.0))
        y = math.sqrt(ab_prev) * (x0 - m) + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0 and noise is not None:
            y = y + sigma * noise
        return m + y


class PlainScheduler:
    """Plain DDPM training / DDIM sampling through diffusers' ``DDPMScheduler`` / ``DDIMScheduler``,
    behind the same API as :class:`OffsetScheduler` (``offset`` is ignored)."""

    def __init__(self, betas: torch.Tensor, prediction: str = "epsilon") -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        if prediction not in PREDICTIONS:
            raise UserError(f"diffup option prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        kw = dict(num_train_timesteps=len(betas), trained_betas=betas.tolist(), clip_sample=False, prediction_type=prediction)
        self.ddpm = DDPMScheduler(**kw, variance_type="fixed_small")
        self.ddim = DDIMScheduler(**kw, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
        self.num_train_timesteps = len(betas)
        self.alphas_cumprod = self.ddpm.alphas_cumprod.double()
        self.prediction = prediction
        self.timesteps = self.ddim.timesteps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        return self.ddpm.add_noise(x0, noise, t.to(x0.device))

    def set_timesteps(self, num_inference_steps: int) -> None:
        if not 1 <= int(num_inference_steps) <= self.num_train_timesteps:
            raise UserError(f"diffup sampling_steps must be in 1..{self.num_train_timesteps}, got {num_inference_steps}")
        self.ddim.set_timesteps(int(num_inference_steps))
        self.timesteps = self.ddim.timesteps

    def step(self, out: torch.Tensor, t: int, sample: torch.Tensor, offset: torch.Tensor | None = None,
             eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.ddim.step(out, int(t), sample, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample


def build_scheduler(process: str, steps: int, schedule: str, prediction: str) -> OffsetScheduler | PlainScheduler:
    if process not in PROCESSES:
        raise UserError(f"diffup option process must be one of {', '.join(PROCESSES)}, got {process!r}")
    if not isinstance(steps, int) or steps < 2:
        raise UserError(f"diffup option timesteps must be an integer >= 2, got {steps!r}")
    betas = make_betas(steps, schedule)
    return OffsetScheduler(betas, prediction) if process == "offset" else PlainScheduler(betas, prediction)
