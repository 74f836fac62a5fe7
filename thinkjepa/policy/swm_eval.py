"""``thinkjepa eval-swm``: a world model's flat agent (or the doorway oracle) under the goal-reaching protocol of
stable-worldmodel's published table, run by this project's loop or by stable-worldmodel's own ``World``.

    thinkjepa eval-swm --world_model checkpoints/wm/swm-tworoom/world_model --env_id swm/TwoRoom-v1 [--in_world true]
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.envs.swm import action_box, make_swm_env
from thinkjepa.policy.mpc import PlanningCost
from thinkjepa.policy.stats import wilson_interval
from thinkjepa.policy.swm_protocol import BlockMPC, DoorwayOracle, GoalProtocol, run_protocol


def evaluate_swm(world_model: str, env_id: str = "swm/TwoRoom-v1", protocol: GoalProtocol | None = None,
                 cost: PlanningCost | None = None, out: str | None = None, device: str = "cpu",
                 oracle: bool = False, in_world: bool = False, num_envs: int = 10) -> dict[str, Any]:
    """The flat agent of ``world_model`` under the protocol: success with its 95 % interval, planning time.

    Args:
        world_model: Exported continuous-action world model (trained on blocks of ``protocol.frameskip``).
        env_id: The stable-worldmodel environment.
        protocol: The protocol (default: the published one).
        cost: Planning cost (default: :data:`~thinkjepa.policy.swm_protocol.PLAN_END`, the distance at the plan's end
            by the goal-distance head plus latent L2, or latent L2 for a world model without a head).
        out: Also write ``summary.json`` and ``episodes.json`` there.
        device: ``cpu`` or ``cuda``.
        oracle: TwoRoom: drive the same MPC through the doorway first (:class:`DoorwayOracle`), the upper bound a
            thinker's subgoals could reach.
        in_world: Run the episodes in stable-worldmodel's own ``World`` (``num_envs`` at a time) through
            :class:`~thinkjepa.policy.swm_world.AgentPolicy` instead of this module's loop.
    """
    from thinkjepa.worldmodel.export import load_world_model

    protocol = protocol or GoalProtocol()
    wm = load_world_model(world_model, device=device)
    env = make_swm_env(env_id)
    low, high = action_box(env)
    env.close()
    agents: list[BlockMPC] = []

    def make_agent() -> BlockMPC:
        agents.append(DoorwayOracle(wm, low, high, protocol, env_id, wm.image_size, cost) if oracle
                      else BlockMPC(wm, low, high, protocol, cost))
        return agents[-1]

    if in_world:
        from thinkjepa.policy.swm_world import evaluate_in_world

        result = evaluate_in_world(make_agent, env_id, protocol, wm.image_size, num_envs, pass_episode=oracle)
        records = [{"success": s, "error": None} for s in result.pop("episode_successes")]
    else:
        records = run_protocol(env_id, make_agent(), protocol, wm.image_size)
    wins, n = sum(r["success"] for r in records), len(records)
    lo, hi = wilson_interval(wins, n)
    summary = {"env": env_id, "world_model": str(world_model), "agent": "oracle" if oracle else "flat",
               "runner": "stable_worldmodel.World" if in_world else "thinkjepa", "protocol": asdict(protocol),
               "episodes": n, "successes": wins, "success_rate": wins / n, "ci95": [lo, hi],
               "planning_seconds_per_episode": sum(a.planner_seconds for a in agents) / n,
               "errored": sum(r["error"] is not None for r in records)}
    print(f"{env_id} {summary['agent']}: {wins}/{n} ({100 * wins / n:.0f} %, 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %), "
          f"planning {summary['planning_seconds_per_episode']:.2f} s per episode")
    if out is not None:
        atomic_write_text(Path(out) / "summary.json", json.dumps(summary, indent=2))
        atomic_write_text(Path(out) / "episodes.json", json.dumps(records, indent=1))
    return summary
