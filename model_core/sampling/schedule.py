"""Flow-matching schedule and the Euler step (HunyuanVideo's FlowMatchDiscreteScheduler, euler solver).

sigma runs 1 -> 0 ("flow reverse"); the model predicts the velocity v = noise - x0, so
x_next = x + v * (sigma_next - sigma) with dt < 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """sigma' = s*sigma / (1 + (s-1)*sigma): spends more steps at high noise when s > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class FlowMatchSchedule:
    """The sigmas (N+1 values, float32) and timesteps (N values, float32 in [0, 1000]) of one run.

    Built with `FlowMatchSchedule.create`; immutable, so a checkpoint stores only its parameters.
    """

    num_steps: int
    shift: float
    reverse: bool
    sigmas: Tensor
    timesteps: Tensor

    @classmethod
    def create(cls, num_steps: int, shift: float, *, reverse: bool = True) -> FlowMatchSchedule:
        """Schedule of `num_steps` Euler steps with the given flow shift.

        Note: sigmas are computed in float32, as the release does; a float64 computation differs by one
        float32 ulp step (up to 1.2e-4 near t=1000) in most common schedules.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if shift <= 0:
            raise ValueError(f"flow shift must be > 0, got {shift}")
        sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)
        sigmas = shift_sigmas(sigmas, float(shift))
        if not reverse:
            sigmas = 1 - sigmas
        timesteps = (sigmas[:-1] * NUM_TRAIN_TIMESTEPS).to(torch.float32)
        return cls(
            num_steps=num_steps, shift=float(shift), reverse=reverse, sigmas=sigmas, timesteps=timesteps
        )

    def state(self) -> dict[str, float | int | bool]:
        """The parameters that rebuild this schedule exactly (what a step checkpoint records)."""
        return {"num_steps": self.num_steps, "shift": self.shift, "reverse": self.reverse}

    @classmethod
    def from_state(cls, state: dict[str, float | int | bool]) -> FlowMatchSchedule:
        """Inverse of `state()`."""
        return cls.create(int(state["num_steps"]), float(state["shift"]), reverse=bool(state["reverse"]))


def euler_step(
    latents: Tensor, velocity: Tensor, sigma: Tensor | float, sigma_next: Tensor | float
) -> Tensor:
    """One Euler step in float32: x + v * (sigma_next - sigma). The result stays float32."""
    dt = torch.as_tensor(sigma_next, dtype=torch.float32) - torch.as_tensor(sigma, dtype=torch.float32)
    return latents.float() + velocity.float() * dt.to(latents.device)
