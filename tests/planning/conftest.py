"""Toy worlds with known answers for the planner tests, written as latent rollouts."""

from __future__ import annotations

from collections import deque

import pytest
import torch

torch.set_num_threads(1)  # small tensors on shared cores: more threads only add contention


class PointMass:
    """Linear point mass ``z_{t+1} = z_t + B·a_t`` with ``a ∈ [-1, 1]^2``; latent dim 2."""

    def __init__(self) -> None:
        self.matrix = torch.tensor([[1.0, 0.5], [0.0, 1.0]])  # (D, A), invertible

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        steps = actions @ self.matrix.T  # (M, H, D)
        return z0.unsqueeze(1) + steps.cumsum(dim=1)  # (M, H, D)

    def land(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Final latent ``(B, D)`` of ``actions (B, H, A)``."""
        return self.rollout(z0, actions)[:, -1]


class GridWorld:
    """Open ``size × size`` grid; latent ``(x, y, dx, dy)``, heading a unit vector.

    Actions follow MiniGrid ids: 0 turn left, 1 turn right, 2 forward (clamped at the border);
    3 is a "jump" two cells forward (a shortcut a restricted action space must never use), 4..6 are
    no-ops. Probability inputs ``(M, H, K)`` roll out the mixture of next latents (mean field),
    which equals the exact grid for one-hot probabilities.
    """

    num_actions = 7

    def __init__(self, size: int = 5) -> None:
        self.size = size

    def step(self, z: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        x, y, dx, dy = z.unbind(-1)  # each (M,)
        left = torch.stack([x, y, dy, -dx], -1)  # heading rotated, y points down
        right = torch.stack([x, y, -dy, dx], -1)
        fwd = torch.stack([(x + dx).clamp(0, self.size - 1), (y + dy).clamp(0, self.size - 1), dx, dy], -1)
        jump = torch.stack(
            [(x + 2 * dx).clamp(0, self.size - 1), (y + 2 * dy).clamp(0, self.size - 1), dx, dy], -1
        )
        stay = probs[:, 4:].sum(-1, keepdim=True)
        moved = probs[:, 0:1] * left + probs[:, 1:2] * right + probs[:, 2:3] * fwd + probs[:, 3:4] * jump
        return moved + stay * z

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if actions.dtype == torch.long:
            actions = torch.nn.functional.one_hot(actions, self.num_actions).to(z0.dtype)
        z, out = z0, []
        for t in range(actions.shape[1]):
            z = self.step(z, actions[:, t])
            out.append(z)
        return torch.stack(out, dim=1)  # (M, H, D)

    @staticmethod
    def latent(x: int, y: int, heading: tuple[int, int]) -> torch.Tensor:
        return torch.tensor([x, y, heading[0], heading[1]], dtype=torch.float32)

    def shortest(self, start: torch.Tensor, goal: torch.Tensor, actions: tuple[int, ...] = (0, 1, 2)) -> int:
        """BFS length of the shortest action sequence from ``start`` to ``goal`` latents ``(4,)``."""
        key = lambda z: tuple(int(v) for v in z.round().tolist())  # noqa: E731
        seen, queue = {key(start)}, deque([(start, 0)])
        while queue:
            z, d = queue.popleft()
            if key(z) == key(goal):
                return d
            for a in actions:
                nz = self.step(z[None], torch.nn.functional.one_hot(torch.tensor([a]), 7).float())[0]
                if key(nz) not in seen:
                    seen.add(key(nz))
                    queue.append((nz, d + 1))
        raise ValueError("goal unreachable")


class CountingRollout:
    """Wraps a rollout; counts calls and records every action batch it sees."""

    def __init__(self, rollout) -> None:
        self.rollout = rollout
        self.calls = 0
        self.batches: list[torch.Tensor] = []

    def __call__(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.batches.append(actions.detach().clone())
        return self.rollout(z0, actions)


@pytest.fixture
def point_mass() -> PointMass:
    return PointMass()


@pytest.fixture
def grid() -> GridWorld:
    return GridWorld()


@pytest.fixture
def counting():
    return CountingRollout
