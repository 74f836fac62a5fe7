"""How a TwoRoom world model's latent distance to a goal grows with the true distance, and where the protocol fails.

    python experiments/tworoom_latent_distance.py WORLD_MODEL [--episodes results/.../protocol/episodes.json]

Part 1 places the agent at 300 random points of the right-hand room (reset seed 100,000, outside the evaluation
seeds), encodes each frame with the target encoder and prints the latent L2 to the encoded goal frame (the agent at
(170, 112)) by bands of true distance in simulator pixels, and the goal-distance head's estimate where the world
model has one. Part 2 (with ``--episodes``, the ``episodes.json`` of
``thinkjepa eval-swm``) splits the protocol's outcomes by whether the goal lies in the other room and by the
start-to-goal distance, and lists each failure's final and closest distance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from thinkjepa.envs.swm import expert_rollout, frame, make_swm_env, place
from thinkjepa.policy.swm_protocol import room
from thinkjepa.worldmodel.export import load_world_model

ENV = "swm/TwoRoom-v1"


def latent_by_distance(world_model: str, points: int = 300) -> None:
    wm = load_world_model(world_model)
    env = make_swm_env(ENV)
    rng = np.random.default_rng(0)
    goal = np.array([170.0, 112.0], np.float32)  # right-hand room (the wall stands at x = 112)

    def encode(p: np.ndarray) -> torch.Tensor:
        place(ENV, env, 100_000, p, goal)
        return wm.target_encode(torch.from_numpy(frame(env, wm.image_size))[None])[0]

    with torch.no_grad():
        z_goal = encode(goal)
        rows = []
        for _ in range(points):
            p = np.array([rng.uniform(125, 215), rng.uniform(10, 215)], np.float32)
            z = encode(p)
            head = float(wm.distance(z, z_goal)) if wm.distance is not None else float("nan")
            rows.append((float(np.linalg.norm(p - goal)), float((z - z_goal).norm()), head))
    rows = np.array(rows)
    for lo, hi in ((0, 10), (10, 20), (20, 40), (40, 60), (60, 80), (80, 100), (100, 130)):
        m = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        if m.any():
            head = (f", goal-distance head {rows[m, 2].mean():.2f} ± {rows[m, 2].std():.2f} blocks"
                    if wm.distance is not None else "")
            print(f"{lo:>3}-{hi:<3} px: latent L2 {rows[m, 1].mean():.2f} ± {rows[m, 1].std():.2f}{head} (n={m.sum()})")
    print(f"correlation of true and latent distance: {np.corrcoef(rows[:, 0], rows[:, 1])[0, 1]:.2f}")
    if wm.distance is not None:
        print(f"correlation of true distance and the head's: {np.corrcoef(rows[:, 0], rows[:, 2])[0, 1]:.2f}")


def failures(episodes: str) -> None:
    env = make_swm_env(ENV)
    rows = []
    for e in json.loads(Path(episodes).read_text()):
        run = expert_rollout(ENV, env, 25, e["seed"])
        s, g = np.asarray(run.states[0])[:2], np.asarray(run.states[-1])[:2]
        rows.append((e["seed"], e["success"], room(env, s) != room(env, g), float(np.linalg.norm(s - g)),
                     e["final_distance"], e["closest_distance"]))
    for cross in (False, True):
        rs = [r for r in rows if r[2] == cross]
        print(f"{'other room' if cross else 'same room'}: {sum(r[1] for r in rs)}/{len(rs)}")
    for lo, hi in ((0, 60), (60, 100), (100, 200)):
        rs = [r for r in rows if lo <= r[3] < hi and not r[2]]
        print(f"same room, goal {lo}-{hi} px away: {sum(r[1] for r in rs)}/{len(rs)}")
    print("failures (seed, other room, start-goal, final, closest px):")
    for r in rows:
        if not r[1]:
            print(r[0], r[2], round(r[3]), round(r[4]), round(r[5]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("world_model")
    parser.add_argument("--episodes", help="episodes.json of a protocol run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    latent_by_distance(args.world_model)
    if args.episodes:
        failures(args.episodes)


if __name__ == "__main__":
    main()
