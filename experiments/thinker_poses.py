"""Does the thinker's subgoal pick the right *state* under the planner's cost? A planning-side score.

``score-thinker`` asks whether z* is nearest the true subgoal among the frames of a recorded episode
(about seven candidates on GoToLocal). The planner asks more: among *every* state it can drive the
agent to, the one that minimises its cost to z* must be a state that finishes the task. This script
measures that directly, without planning, on unseen layouts:

1. ``grounding_samples`` draws layouts, a random agent state and a uniquely named object;
2. ``pose_frames`` renders the agent in every free cell and heading of each layout, and the world model
   encodes them all;
3. the thinker proposes z* for (frame, instruction); the planner's cost (:class:`PlanningCost`, as the
   evaluation recipe sets it) ranks every state of the layout against z*.

Reported per thinker, with the true instruction and with a neutral one (language-blind):

* ``goal``: the cheapest state faces the named object (BabyAI's GoTo success condition);
* ``waypoint``: the cheapest state is the next full-grid waypoint (the exact training label);
* ``rank``: median rank of the waypoint state among all states (0 = cheapest).

Two references: ``oracle`` (z* = the waypoint render's own latent: what the cost itself can tell apart)
and ``copy`` (z* = the current frame's latent).

``python experiments/thinker_poses.py --wm checkpoints/wm/babyai-gpu-distance/world_model \\
    --thinker checkpoints/thinker/babyai-waypoint/thinker --latent_weight 0 1 4 10 1000``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.data.grounding import grounding_samples
from thinkjepa.data.latents import encode_fixed_batches
from thinkjepa.data.poses import pose_frames
from thinkjepa.data.waypoints import AgentState
from thinkjepa.policy.mpc import PlanningCost
from thinkjepa.thinker.checkpoint import load_thinker
from thinkjepa.worldmodel.export import load_world_model


def encode(fn, frames: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.from_numpy(encode_fixed_batches(fn, [frames]))


def propose(thinker, samples, neutral: str | None, batch: int = 32) -> torch.Tensor:
    missions = [neutral] * len(samples) if neutral else samples.missions
    return torch.cat(
        [
            thinker.propose(torch.from_numpy(samples.frames[i : i + batch]), missions[i : i + batch])
            for i in range(0, len(samples), batch)
        ]
    )


def score(z: torch.Tensor, samples, layouts, cost) -> dict[str, float]:
    goal = waypoint = 0
    ranks = []
    for i in range(len(samples)):
        poses, latents = layouts[int(samples.seeds[i])]
        with torch.no_grad():
            c = cost(latents, z[i].expand_as(latents))
        order = torch.argsort(c)
        best = AgentState(*(int(v) for v in poses[order[0]]))
        goal += best.front == tuple(samples.targets[i])
        match = np.flatnonzero((poses == samples.waypoints[i]).all(axis=1))[0]
        waypoint += int(order[0]) == match
        ranks.append(int((order == match).nonzero()[0, 0]))
    n = len(samples)
    return {"goal": round(float(goal) / n, 4), "waypoint": round(float(waypoint) / n, 4), "median_rank": float(np.median(ranks))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wm", required=True, help="exported world model")
    p.add_argument("--thinker", required=True, nargs="+", help="one or more thinker checkpoints")
    p.add_argument("--level", default="BabyAI-GoToLocal-v0")
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--per_layout", type=int, default=4)
    p.add_argument("--seed", type=int, default=70_000_000, help="first layout (far from training seeds)")
    p.add_argument("--latent_weight", type=float, nargs="+", default=[1.0],
                   help="weights of L2 in the planner's cost (recipes/eval/babyai-gpu.yaml: 1)")
    p.add_argument("--neutral", default="go to the object")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    wm = load_world_model(args.wm).eval()
    samples = grounding_samples(args.level, args.samples, seed=args.seed, image_size=wm.image_size,
                                per_layout=args.per_layout, with_subgoals=True)
    seeds = sorted(set(samples.seeds.tolist()))
    rendered = pose_frames(args.level, seeds, wm.image_size)  # every state of every layout, encoded at once
    latents, o = encode(wm.target_encode, rendered.frames), rendered.offsets
    layouts = {s: (rendered.poses[o[i] : o[i + 1]], latents[o[i] : o[i + 1]]) for i, s in enumerate(seeds)}
    # the waypoint's own latent (how well the cost alone tells the states apart) and the current frame's
    proposals = {"oracle": encode(wm.target_encode, samples.subgoal_frames),
                 "copy": encode(wm.target_encode, samples.frames)}
    for path in args.thinker:
        thinker = load_thinker(path, world_model=wm).eval()
        proposals[path] = propose(thinker, samples, None)
        proposals[f"{path} (neutral)"] = propose(thinker, samples, args.neutral)
    result = {"world_model": args.wm, "level": args.level, "samples": len(samples), "layouts": len(layouts),
              "states_per_layout": float(np.mean([len(v[0]) for v in layouts.values()])), "latent_weight": {}}
    for weight in args.latent_weight:
        metric, _ = PlanningCost(distance="auto", latent_weight=weight).metric(wm)
        cost = metric if callable(metric) else (lambda a, b: torch.linalg.vector_norm(a - b, dim=-1))
        rows = result["latent_weight"][str(weight)] = {k: score(z, samples, layouts, cost) for k, z in proposals.items()}
        for k, row in rows.items():
            print(f"latent_weight {weight:g}  {k}: goal {row['goal']:.1%}  waypoint {row['waypoint']:.1%}  "
                  f"median rank {row['median_rank']:.0f} of {result['states_per_layout']:.0f}", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
