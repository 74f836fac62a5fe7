"""The seams between the world model, the planner and the thinker.

Shapes are requirements, names are what the package uses. ``L`` is the world model's latent shape;
thinkjepa's world models use a vector latent, so ``L == (D,)``.

Images crossing these seams are ``uint8`` tensors laid out ``(B, H, W, 3)`` exactly as environments
and episode files hold them; each model converts them to its own input format, so no caller has to
know a model's normalisation.

Actions:
    * discrete spaces: ``long`` indices ``(B, T)``, or ``float`` probabilities ``(B, T, K)`` (the
      relaxation the gradient planner differentiates through);
    * continuous spaces: ``float`` ``(B, T, A)``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class WorldModel(Protocol):
    """What planners and policies need from a world model."""

    latent_dim: int

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Context-encode ``uint8 (B, H, W, 3)`` images to latents ``(B, D)``."""
        ...

    def target_encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode with the EMA target encoder (no gradient) to ``(B, D)``."""
        ...

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Roll the predictor out open-loop from ``z0 (B, D)`` under ``actions (B, T[, K])``.

        Returns the predicted latents ``(B, T, D)`` for steps ``1..T`` (``z0`` itself excluded).
        """
        ...


RolloutFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``rollout(z0 (M, D), actions (M, H[, K])) -> (M, H, D)``."""

CostFn = Callable[[torch.Tensor], torch.Tensor]
"""``cost(z_traj (B, N, H, D)) -> (B, N)``: lower is better."""


@runtime_checkable
class Thinker(Protocol):
    """A model that proposes the next subgoal as a world-model latent."""

    latent_dim: int

    def propose(self, images: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` images and B instructions -> subgoal latents ``(B, D)``."""
        ...


@dataclass(frozen=True)
class EpisodeStart:
    """What an agent is told when an episode starts: its goal, as an instruction, a goal image or both.

    Attributes:
        instruction: The task in words (``"go to the red ball"``): what a thinker-driven agent reads.
        goal_image: ``uint8 (H, W, 3)``: the frame the episode should end in, what a flat agent plans toward.
        level: The BabyAI level the episode is on, if known: a released agent refuses one whose grid differs from
            the level it was built on (:func:`thinkjepa.envs.babyai.check_level`).
    """

    instruction: str | None = None
    goal_image: np.ndarray | None = None
    level: str | None = None


def episode_starts(episodes: EpisodeStart | str | Sequence[EpisodeStart | str]) -> tuple[list[EpisodeStart], bool]:
    """``(starts, single)``: one episode (an instruction or an :class:`EpisodeStart`) or a batch of them."""
    single = isinstance(episodes, (str, EpisodeStart))
    items = [episodes] if single else list(episodes)
    starts = [EpisodeStart(instruction=e) if isinstance(e, str) else e for e in items]
    bad = [type(e).__name__ for e in starts if not isinstance(e, EpisodeStart)]
    if bad or not starts:
        raise ValueError(f"reset takes an instruction, an EpisodeStart or a non-empty list of them; got {bad or 'nothing'}")
    return starts, single


def check_levels(starts: Sequence[EpisodeStart], built_for: str | None, instructions: bool = False) -> None:
    """Refuse episodes a released agent was not built for (``built_for``: its level; ``None``: an agent of one's
    own, nothing to check): a level whose grid differs, and with ``instructions`` (an agent that reads them) an
    instruction with words no mission of ``built_for`` uses.

    Raises:
        ValueError: naming the level or the words.
    """
    if built_for is None:
        return
    from thinkjepa.envs.babyai import check_level, check_mission

    for level in sorted({s.level for s in starts if s.level is not None}):
        check_level(level, built_for)
    if instructions:
        for text in sorted({s.instruction for s in starts if s.instruction}):
            check_mission(text, built_for)


def refusal(check: Callable[[Sequence[EpisodeStart]], None], start: EpisodeStart) -> str | None:
    """Why ``check`` (an agent's ``check_starts``) refuses the episode ``start``; ``None`` when it takes it."""
    try:
        check([start])
    except ValueError as err:
        return str(err)
    return None


@runtime_checkable
class Policy(Protocol):
    """An agent: ``reset`` starts one episode or a batch, ``act`` answers each observation with an action.

    ``act`` takes ``uint8 (H, W, 3)`` after a single-episode ``reset`` and returns one action id, or
    ``(R, H, W, 3)`` for the ``R`` episodes still running (``active``, a mask over the batch) and returns ``(R,)``.
    """

    def reset(self, episodes: EpisodeStart | str | Sequence[EpisodeStart | str]) -> None: ...

    def act(self, obs: np.ndarray | torch.Tensor, active: np.ndarray | None = None) -> Any: ...


@runtime_checkable
class SubgoalSource(Protocol):
    """Where a hierarchical agent's subgoals come from (a thinker, the simulator's true waypoints...)."""

    name: str

    def reset(self, episodes: Sequence[EpisodeStart]) -> None:
        """Start a batch of episodes."""
        ...

    def propose(self, rows: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        """Subgoal latents ``(R, D)`` for the episodes ``rows`` seen in ``uint8 (R, H, W, 3)`` images."""
        ...


class Subgoals(NamedTuple):
    """Subgoals of a source that also searched for how to reach them (:class:`PathSubgoalSource`)."""

    latents: torch.Tensor  # (R, D)
    paths: list[list[int]]  # per episode, the actions predicted to reach its subgoal ([]: none found)


@runtime_checkable
class PathSubgoalSource(SubgoalSource, Protocol):
    """A subgoal source that returns, with each subgoal, the action path it predicts reaches it.

    An agent that follows those paths keeps them itself and tells the source which actions it saw do
    nothing (``blocked``), so the next search leaves them out; the source keeps no per-episode paths.
    """

    def propose_with_paths(self, rows: Sequence[int], images: torch.Tensor,
                           blocked: Sequence[Collection[int]] | None = None) -> Subgoals: ...
