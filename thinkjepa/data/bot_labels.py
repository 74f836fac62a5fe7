"""What the BabyAI bot is doing, and what the mission targets, as labels for the collector.

The bot keeps a stack of subgoals; the one on top after ``replan`` chose the step's action, so it is
the step's *active subgoal*. :func:`active_subgoal` names it by class and target; the collector turns
the per-step names into segments whose end is the frame where the subgoal completed (or was replaced).
Naming by description rather than object identity matters: the bot pops exploratory subgoals every
step and pushes fresh, equal ones, which should count as one subgoal.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from minigrid.core.world_object import WorldObj
from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc, OpenInstr, PickupInstr
from minigrid.utils.baby_ai_bot import BabyAIBot


def describe_target(datum: object) -> str:
    """Short description of a subgoal's datum: an object description, an object or a cell."""
    if datum is None:
        return ""
    if isinstance(datum, ObjDesc):
        # Not ObjDesc.surface(): it re-runs find_matching_objs and mutates the bot's object set.
        words = [w for w in (datum.color, datum.type or "object") if w]
        if datum.loc:
            words.append(f"({datum.loc})")
        return " ".join(words)
    if isinstance(datum, WorldObj):
        at = f" at ({datum.cur_pos[0]}, {datum.cur_pos[1]})" if datum.cur_pos is not None else ""
        return f"{datum.color} {datum.type}{at}"
    x, y = np.asarray(datum).tolist()
    return f"cell ({x}, {y})"


def active_subgoal(bot: BabyAIBot) -> tuple[str, str]:
    """``(kind, target)`` of the subgoal on top of the bot's stack; ``("Done", "")`` when it is empty."""
    if not bot.stack:
        return "Done", ""
    subgoal = bot.stack[-1]
    target = describe_target(subgoal.datum)
    if subgoal.reason:
        target = f"{target} [{subgoal.reason}]".strip()
    return type(subgoal).__name__, target


def mission_targets(env: gym.Env) -> list[tuple[int, int]]:
    """Cells of every object matching the mission's description (any of them completes a GoTo).

    Raises:
        ValueError: for instructions other than a single go-to / open / pick-up, whose target
            changes during the episode.
    """
    instr = env.unwrapped.instrs
    if not isinstance(instr, GoToInstr | OpenInstr | PickupInstr):
        raise ValueError(
            f"{env.unwrapped.spec.id if env.unwrapped.spec else type(env.unwrapped).__name__}: full-grid "
            f"waypoints need a single GoTo/Open/Pickup instruction, got {type(instr).__name__}"
        )
    return [(int(x), int(y)) for x, y in instr.desc.obj_poss]
