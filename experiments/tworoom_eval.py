"""TwoRoom under the published protocol, and its long-horizon variant with the doorway oracle beside the flat agent.

    python experiments/tworoom_eval.py WORLD_MODEL OUT [--long-episodes 20] [--latent]

Writes ``OUT/protocol``, ``OUT/long-flat`` and ``OUT/long-oracle`` (each ``summary.json`` + ``episodes.json``).
The long-horizon runs (goal 100 steps away in the other room, 200 steps of budget) plan with a smaller CEM
(100 x 10, top 10 by default) than the protocol's 300 x 30: the same for the flat agent and the oracle. Every run
plans with the protocol's default cost (the goal-distance head plus latent L2 at the plan's end where the world
model has a head), or ``--latent`` on latent L2 alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from thinkjepa.policy.mpc import PlanningCost
from thinkjepa.policy.swm_eval import evaluate_swm
from thinkjepa.policy.swm_protocol import GoalProtocol


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("world_model")
    parser.add_argument("out")
    parser.add_argument("--long-episodes", type=int, default=20)
    parser.add_argument("--long-samples", type=int, default=100, help="CEM samples of the long-horizon runs")
    parser.add_argument("--long-iterations", type=int, default=10, help="CEM iterations of the long-horizon runs")
    parser.add_argument("--skip-protocol", action="store_true")
    parser.add_argument("--latent", action="store_true", help="plan on latent L2 alone, even with a head")
    args = parser.parse_args()
    out = Path(args.out)
    runs = [] if args.skip_protocol else [("protocol", GoalProtocol(), False)]
    long = GoalProtocol(episodes=args.long_episodes, goal_offset=100, eval_budget=200, other_room=True,
                        num_samples=args.long_samples, iterations=args.long_iterations,
                        num_elites=max(1, args.long_samples // 10))
    runs += [("long-flat", long, False), ("long-oracle", long, True)]
    for name, protocol, oracle in runs:
        cost = PlanningCost(distance="latent", steps="final") if args.latent else None
        summary = evaluate_swm(args.world_model, protocol=protocol, oracle=oracle, cost=cost, out=str(out / name))
        print(name, json.dumps({k: summary[k] for k in ("successes", "episodes", "ci95", "planning_seconds_per_episode")}),
              flush=True)


if __name__ == "__main__":
    main()
