"""Where a released agent's subgoals point, query by query: the thinker's raw z*, the state snapping puts in
its place, and the oracle's waypoint at that moment.

A latent is named by its nearest render: the agent is drawn in every free cell, doorway and heading of the
episode's layout (:func:`~thinkjepa.data.poses.pose_frames`, doors as at the start) and the world model's
target encoder encodes each. For every thinker query of a hierarchical episode this prints and records:

* the agent's pose and why the thinker was asked (start / reached / unreachable / budget);
* the pose the raw z* names, its L2 gap to that render, and how many actions (the layout's true step
  distances, toggles included) separate it from the oracle's next waypoint;
* the same for the snapped subgoal the planner was given;
* with a grounded thinker, the cells its read-out points at (named object, ..., next waypoint).

"The thinker names the waypoint but the agent never gets there" and "the thinker names the wrong place"
are then told apart per episode. The layouts are the simulator's: a diagnostic, not something an agent sees.

``python experiments/subgoal_where.py --release babyai-goto --seeds 1000017,1000021 --out where.json``
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.data.collect import WaypointFrames
from thinkjepa.data.latents import encode_fixed_batches
from thinkjepa.data.poses import pose_frames
from thinkjepa.envs.babyai import is_success, make_env
from thinkjepa.policy import HierarchicalPolicy
from thinkjepa.policy import subgoals as subgoals_module
from thinkjepa.policy.mpc import ActionsToGo
from thinkjepa.policy.settings import release_settings
from thinkjepa.policy.subgoals import ReachableSubgoals
from thinkjepa.release import Release


class Recorder:
    """Wraps the agent's subgoal source(s) to keep the last raw and snapped proposal."""

    def __init__(self, agent: HierarchicalPolicy) -> None:
        self.raw = self.snapped = None
        snap = agent.subgoals if isinstance(agent.subgoals, ReachableSubgoals) else None
        inner = snap.source if snap is not None else agent.subgoals
        propose = inner.propose

        def raw(rows, images):
            self.raw = propose(rows, images)
            return self.raw

        inner.propose = raw
        self.cells = None
        thinker = getattr(inner, "thinker", None)
        head = getattr(thinker, "head", None)
        if head is not None and getattr(head, "scorer", None) is not None:  # a grounded read-out: which cells
            def ask(images, instructions):
                hidden, inputs = thinker.encode(images, instructions)
                mask = thinker.image_mask(inputs)
                scores = head.grounding_scores(hidden, mask)  # (B, Q, S): named object, ..., next waypoint
                self.cells = [[int(q[m].argmax()) for q in b] for b, m in zip(scores, mask, strict=True)]
                return propose_thinker(images, instructions)

            propose_thinker = thinker.propose
            thinker.propose = ask
        self.states = None  # the reachable states of the last snapping (predicted latents)
        self.alternatives: dict[str, torch.Tensor] = {}
        if snap is not None:
            with_paths = snap.propose_with_paths
            enumerate_states = subgoals_module.reachable_latents

            def reachable(*args, **kwargs):
                out = enumerate_states(*args, **kwargs)
                self.states = out[0]
                return out

            subgoals_module.reachable_latents = reachable
            goal_distance = getattr(agent.world_model, "distance", None)
            rankers = ({"head": ActionsToGo(goal_distance, 0.0), "cost": ActionsToGo(goal_distance, 10.0)}
                       if goal_distance is not None else {})

            def direction(states: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
                """The states whose step from where the agent is (``states[0]``) points most towards the goal."""
                return -torch.nn.functional.cosine_similarity(states - states[:1], goals - states[:1], dim=-1)

            rankers["direction"] = direction

            def snapped(rows, images, blocked=None):
                out = with_paths(rows, images, blocked)
                self.snapped = out.latents
                self.alternatives = {}
                if self.states is not None and self.raw is not None and len(self.states) > 1:
                    for key, rank in rankers.items():  # what another ranking of the same states would give
                        far = rank(self.states, self.raw[:1].expand_as(self.states)).float()
                        far[0] = float("inf")
                        self.alternatives[key] = self.states[int(far.argmin())][None]
                return out

            snap.propose_with_paths = snapped


def run(agent: HierarchicalPolicy, level: str, seed: int, max_steps: int) -> dict:
    poses = pose_frames(level, [seed], agent.world_model.image_size, with_distances=True)
    with torch.no_grad():
        latents = torch.from_numpy(encode_fixed_batches(agent.world_model.target_encode, [poses.frames]))
    index = {tuple(int(v) for v in p): i for i, p in enumerate(poses.poses)}
    steps = poses.distances[0]

    def name(z: torch.Tensor) -> tuple[tuple[int, int, int], float]:
        d = torch.linalg.vector_norm(latents - z[None].to(latents), dim=-1)
        k = int(d.argmin())
        return tuple(int(v) for v in poses.poses[k]), round(float(d[k]), 2)

    recorder = Recorder(agent)
    env = make_env(level, image_size=agent.world_model.image_size)
    obs, info = env.reset(seed=seed)
    base = env.unwrapped
    agent.reset(info["mission"])
    queries, reward, terminated, t = [], 0.0, False, 0
    for t in range(max_steps):
        asked = len(agent.traces[0].queries)
        action = agent.act(obs)
        if len(agent.traces[0].queries) > asked:
            labeler = WaypointFrames(env)
            labeler.label()
            waypoint = labeler.states[-1]
            here = (int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir))
            row = {"step": t, "agent": here, "reason": agent.traces[0].queries[-1][1], "waypoint": waypoint}
            if recorder.cells is not None:  # one image token per grid cell, row-major
                row["grounded_cells"] = [(c % base.width, c // base.width) for c in recorder.cells[0]]
            to_go = int(steps[index[here], index[waypoint]]) if here in index and waypoint in index else None
            picks = {"raw": recorder.raw, "snapped": recorder.snapped}
            picks.update({f"by_{k}": z for k, z in recorder.alternatives.items()})
            if recorder.states is not None and len(recorder.states) > 1 and to_go is not None:
                named = [name(z)[0] for z in recorder.states[1:]]  # the best any ranking of them could do
                best = min(range(len(named)), key=lambda j: steps[index[named[j]], index[waypoint]]
                           if named[j] in index else 10**6)
                picks["best_reachable"] = recorder.states[1 + best][None]
            for key, z in picks.items():
                if z is not None:
                    pose, gap = name(z[0])
                    far = int(steps[index[pose], index[waypoint]]) if waypoint in index and pose in index else None
                    row[key] = {"pose": pose, "gap": gap, "actions_to_waypoint": far,
                                "progress": None if far is None or to_go is None else to_go - far}
            queries.append(row)
            print(f"  t={t:3d} at {here} {row['reason']:11s} waypoint {waypoint}  " + "  ".join(
                f"{k} -> {row[k]['pose']} (gap {row[k]['gap']}, {row[k]['actions_to_waypoint']} actions off)"
                for k in ("raw", "snapped", "by_head") if k in row))
        obs, reward, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            break
    env.close()
    return {"seed": seed, "mission": info["mission"], "success": bool(is_success(reward, terminated)),
            "steps": t + 1, "queries": queries}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--release", default="babyai-goto", help="a released agent (checkpoints/release/<name>)")
    p.add_argument("--seeds", required=True, help="comma-separated episode seeds")
    p.add_argument("--level", default=None, help="default: the level the release was measured on")
    p.add_argument("--out", default=None, help="write the records here (JSON)")
    args = p.parse_args()
    torch.set_num_threads(1)
    agent = HierarchicalPolicy.from_release(args.release)
    level = args.level or agent.built_for
    max_steps = release_settings(Release.open(args.release, verify=False)).max_steps
    episodes = []
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"seed {seed}")
        episodes.append(run(agent, level, seed, max_steps))
        e = episodes[-1]
        print(f"  {'success' if e['success'] else 'failure'} in {e['steps']} steps: {e['mission']}")
    rows = [q for e in episodes for q in e["queries"]]
    grounded = [q for q in rows if "grounded_cells" in q]
    if grounded:
        print(f"the thinker's read-out names the waypoint's cell at "
              f"{np.mean([tuple(q['grounded_cells'][-1]) == tuple(q['waypoint'][:2]) for q in grounded]):.0%} "
              f"of {len(grounded)} queries")
    for key in ("raw", "snapped", "by_head", "by_cost", "by_direction", "best_reachable"):
        far = [q[key]["actions_to_waypoint"] for q in rows if key in q and q[key]["actions_to_waypoint"] is not None]
        gain = [q[key]["progress"] for q in rows if key in q and q[key]["progress"] is not None]
        if far:
            print(f"{key}: names the waypoint at {np.mean([f == 0 for f in far]):.0%} of {len(far)} queries, "
                  f"within 2 actions at {np.mean([f <= 2 for f in far]):.0%}; median gap "
                  f"{np.median([q[key]['gap'] for q in rows if key in q]):.2f}; brings the agent closer to the "
                  f"waypoint at {np.mean([g > 0 for g in gain]):.0%} (mean {np.mean(gain):+.1f} actions)")
    if args.out:
        atomic_write_text(args.out, json.dumps(episodes, indent=1))


if __name__ == "__main__":
    main()
