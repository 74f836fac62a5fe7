"""Where a hierarchical policy's subgoals come from: the thinker, or an oracle.

A subgoal source answers ``propose(rows, images) -> z* (R, D)`` for the episodes ``rows`` of the
current batch, given their current frames.

* :class:`ThinkerSubgoals` asks the VLM thinker with the episode's instruction — the real agent.
* :class:`OracleSubgoals` renders the next full-grid shortest-path waypoint (the label the thinker
  is trained on) from the true environment state and encodes it with the world model's target
  encoder — a perfect thinker. Its success rate is the upper bound that separates thinker errors
  from world-model and planner errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from thinkjepa.data.collect import WaypointFrames
from thinkjepa.protocols import Thinker, WorldModel


class ThinkerSubgoals:
    """Subgoals proposed by a thinker from the frame and the instruction.

    Args:
        thinker: Anything implementing the :class:`~thinkjepa.protocols.Thinker` protocol.
    """

    name = "thinker"

    def __init__(self, thinker: Thinker) -> None:
        self.thinker = thinker
        self.instructions: list[str] = []

    def reset(self, instructions: Sequence[str], envs: Sequence | None = None) -> None:
        self.instructions = list(instructions)

    @torch.no_grad()
    def propose(self, rows: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        return self.thinker.propose(images, [self.instructions[r] for r in rows])


class OracleSubgoals:
    """The next full-grid waypoint of each episode's true state, encoded by the world model.

    Args:
        world_model: Encodes the rendered waypoint frames (target encoder).
        max_gap: Also place a waypoint every ``max_gap`` shortest-path steps (``None``: door crossings
            and the final approach only, the thinker's training label).
    """

    name = "oracle"

    def __init__(self, world_model: WorldModel, max_gap: int | None = None) -> None:
        self.world_model = world_model
        self.max_gap = max_gap
        self.envs: list = []

    def reset(self, instructions: Sequence[str], envs: Sequence | None = None) -> None:
        if envs is None:
            raise ValueError("OracleSubgoals needs the environments: reset(instructions, envs=...)")
        self.envs = list(envs)

    @torch.no_grad()
    def propose(self, rows: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        frames = []
        for r in rows:
            labeler = WaypointFrames(self.envs[r], self.max_gap)
            frames.append(labeler.frames[labeler.label()])
        return self.world_model.target_encode(torch.as_tensor(np.stack(frames), device=images.device))
