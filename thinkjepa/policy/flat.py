"""The flat baseline: goal-image-conditioned latent MPC with the world model alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from thinkjepa.envs.babyai import navigation_space
from thinkjepa.planning.base import Planner
from thinkjepa.planning.spaces import ActionSpace
from thinkjepa.policy.mpc import LatentMPC, PlanningCost
from thinkjepa.policy.settings import AgentSettings, release_settings
from thinkjepa.protocols import EpisodeStart, WorldModel, check_levels, refusal
from thinkjepa.release import Release
from thinkjepa.worldmodel.export import load_world_model


class FlatPolicy:
    """Encode the goal image once, then plan toward it every step (MPC).

    Works on a batch of ``B`` episodes: ``reset(goal_images (B, H, W, 3))``, then
    ``act(obs (B, H, W, 3), active)`` returns one action per active episode.

    Args:
        world_model: The JEPA world model.
        planner: The latent planner.
        space: Action space to plan over.
        cost: What the planner minimises (:class:`~thinkjepa.policy.mpc.PlanningCost`).
        seed: Planner seed.
        commit: Actions of each plan executed before planning again (:class:`~thinkjepa.policy.mpc.LatentMPC`).
    """

    def __init__(
        self,
        world_model: WorldModel,
        planner: Planner,
        space: ActionSpace,
        cost: PlanningCost | None = None,
        seed: int = 0,
        commit: int = 1,
    ) -> None:
        self.mpc = LatentMPC(world_model, planner, space, cost, seed, commit)
        self.world_model = world_model
        self.goals: torch.Tensor | None = None
        self._single = False
        self.built_for: str | None = None  # a released agent's level: episodes on another grid are refused

    @classmethod
    def from_settings(cls, world_model: WorldModel, settings: AgentSettings, space: ActionSpace | None = None,
                      seed: int = 0, planner: Planner | None = None) -> FlatPolicy:
        """The flat agent with ``settings``' planner, cost and commitment (the rest of the settings concern subgoals)."""
        return cls(world_model, planner or settings.make_planner(), space or navigation_space(),
                   cost=settings.planning_cost(), seed=seed, commit=settings.commit)

    @classmethod
    def from_release(cls, name: str | Path, device: str = "cpu", root: str | Path | None = None,
                     **overrides) -> FlatPolicy:
        """The flat agent of a release: its world model, planner and cost, without the thinker — the
        comparison the release's hierarchical agent is measured against (hashes checked as in
        :meth:`~thinkjepa.policy.HierarchicalPolicy.from_release`)."""
        release = Release.open(name, root=root)
        settings = release_settings(release, overrides)
        agent = cls.from_settings(load_world_model(release.world_model_path, device=device), settings)
        agent.built_for = settings.level
        return agent

    def check_starts(self, starts: Sequence[EpisodeStart]) -> None:
        """Raise ``ValueError`` for episodes this agent cannot take: no goal image, or another grid than a
        released agent's level."""
        missing = [i for i, e in enumerate(starts) if not isinstance(e, EpisodeStart) or e.goal_image is None]
        if missing or not starts:
            raise ValueError(f"a flat agent plans toward a goal image: episodes {missing or 'none'} give no "
                             "EpisodeStart(goal_image=...)")
        check_levels(starts, self.built_for)

    def refusal(self, start: EpisodeStart) -> str | None:
        """Why :meth:`reset` would refuse the episode ``start`` (``None``: the agent takes it)."""
        return refusal(self.check_starts, start)

    @torch.no_grad()
    def reset(self, episodes: EpisodeStart | Sequence[EpisodeStart] | np.ndarray | torch.Tensor) -> None:
        """Start episodes whose goals are images: :class:`~thinkjepa.protocols.EpisodeStart` s with a
        ``goal_image`` (one: ``act`` then takes one frame and returns one action), or ``uint8 (B, H, W, 3)``."""
        self._single = isinstance(episodes, EpisodeStart)
        if isinstance(episodes, (np.ndarray, torch.Tensor)):
            goal_images = episodes
        else:
            starts = [episodes] if self._single else list(episodes)
            self.check_starts(starts)
            goal_images = np.stack([e.goal_image for e in starts])
        self.goals = self.world_model.target_encode(self.mpc.images(goal_images))
        self.mpc.reset(self.goals.shape[0])

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, active: np.ndarray | None = None) -> np.ndarray | int:
        """Actions for the active episodes, in order: ``(R,)`` int64 (one int after a single-episode reset)."""
        if self.goals is None:
            raise RuntimeError("FlatPolicy.act called before reset(goal_images)")
        images = self.mpc.images(obs)
        rows = torch.arange(self.goals.shape[0]) if active is None else torch.as_tensor(np.flatnonzero(active))
        if len(rows) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} observations for {len(rows)} active episodes")
        z = self.world_model.encode(images)
        actions, _ = self.mpc.act(z, self.goals[rows], rows.to(z.device))
        out = actions.cpu().numpy()
        return int(out[0]) if self._single else out

    @property
    def planner_seconds(self) -> float:
        return self.mpc.planner_seconds
