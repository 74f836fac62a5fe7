"""Policies built from a world model, a planner and (optionally) a thinker, and their evaluation."""

from thinkjepa.policy.flat import FlatPolicy
from thinkjepa.policy.hierarchical import EpisodeTrace, HierarchicalPolicy
from thinkjepa.policy.subgoals import OracleSubgoals, ThinkerSubgoals

__all__ = ["EpisodeTrace", "FlatPolicy", "HierarchicalPolicy", "OracleSubgoals", "ThinkerSubgoals"]
