"""Latent planners: CEM, MPPI and gradient descent behind one batched interface.

``planner.plan(z0 (B, D), cost, rollout, space, init=None, generator=None) -> PlanResult`` plans all
``B`` episodes at once, with one ``rollout`` call per iteration; see :mod:`thinkjepa.planning.base`
for the conventions.
"""

from thinkjepa.planning.base import Planner, PlanResult
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.costs import GoalCost, latent_distance
from thinkjepa.planning.gradient import GradientPlanner
from thinkjepa.planning.mppi import MPPIPlanner
from thinkjepa.planning.sampling import SamplingPlanner
from thinkjepa.planning.spaces import ActionSpace, BoxSpace, DiscreteSpace

__all__ = [
    "ActionSpace",
    "BoxSpace",
    "CEMPlanner",
    "DiscreteSpace",
    "GoalCost",
    "GradientPlanner",
    "MPPIPlanner",
    "PlanResult",
    "Planner",
    "SamplingPlanner",
    "latent_distance",
]
