"""Snapping by where: a thinker subgoal's stand-in chosen by the cell a pose read-out gives it, not by latent L2.

Experiment 21 found that on GoTo the thinker's raw z* names the right waypoint far more often than the
reachable state snapping puts in its place (69 % against 9 % of queries): from a room away the waypoint is out
of reach, and the reachable state nearest in latent L2 is often on no way to it. Here a pose read-out (an MLP
fitted on rendered layouts of probe seeds, :func:`~thinkjepa.worldmodel.probe.fit_pose_probe`) reads the cell
and heading of every reachable state and of the subgoal, and the stand-in is the state closest in cells
(expected cell under the read-out, L1) with its heading as a tie-breaker; ``--goal router`` takes the subgoal's
cell from the thinker's grounded read-out (its waypoint query) instead of reading it off z*.

``python experiments/snap_where.py --goal probe --seeds 1000000 --episodes 40 --out results/snap-where-probe``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.data.latents import encode_fixed_batches
from thinkjepa.data.poses import pose_frames
from thinkjepa.envs.babyai import make_env
from thinkjepa.policy import HierarchicalPolicy
from thinkjepa.policy.demos import demonstrate
from thinkjepa.policy.rollout import run_episodes
from thinkjepa.policy.settings import release_settings
from thinkjepa.policy.stats import wilson_interval
from thinkjepa.release import Release
from thinkjepa.worldmodel.probe import PoseReadout, fit_pose_probe


def fit_probe(world_model, level: str, layouts: int, seed: int, val: int = 10, cache: str | None = None) -> PoseReadout:
    if cache and Path(cache).exists():
        return torch.load(cache, weights_only=False)
    data = pose_frames(level, list(range(seed, seed + layouts + val)), world_model.image_size)
    with torch.no_grad():
        latents = encode_fixed_batches(world_model.target_encode, [data.frames])
    train = data.layout < layouts
    readout = fit_pose_probe(latents, data, train, steps=3000, hidden=512)
    read, truth = readout(latents[~train]), data.poses[~train]
    right = read == truth
    near = np.abs(read[:, :2] - truth[:, :2]).sum(1) <= 1
    print(f"pose read-out on {val} held-out layouts: cell {right[:, :2].all(1).mean():.1%}, "
          f"heading {right[:, 2].mean():.1%}, within one cell {near.mean():.1%}")
    if cache:
        torch.save(readout, cache)
    return readout


def fit_rollout_probe(world_model, level: str, layouts: int, seed: int, depth: int, val: int = 10,
                      steps: int = 3000, batch: int = 512, cache: str | None = None) -> PoseReadout:
    """A pose read-out fitted on what snapping reads it on: latents the predictor reaches one action at a time (as
    :func:`~thinkjepa.policy.subgoals.reachable_latents` expands them) from encoded renders, up to ``depth``
    actions deep, each labelled with the pose the layout's own transitions lead to (a quarter of each batch is
    encoded renders, depth 0)."""
    if cache and Path(cache).exists():
        return torch.load(cache, weights_only=False)
    import torch.nn.functional as F

    from thinkjepa.worldmodel.probe import _Readout

    data = pose_frames(level, list(range(seed, seed + layouts + val)), world_model.image_size)
    with torch.no_grad():
        target = torch.from_numpy(encode_fixed_batches(world_model.target_encode, [data.frames]))
        context = torch.from_numpy(encode_fixed_batches(world_model.encode, [data.frames]))
    poses, nxt = torch.as_tensor(data.poses), torch.as_tensor(data.next_state)
    train = torch.as_tensor(data.layout < layouts)
    g = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def sample(pool: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = pool[torch.randint(len(pool), (n,), generator=g)]
        length = torch.randint(depth + 1, (n,), generator=g)
        length[: n // 4] = 0
        z, state = context[start].clone(), start.clone()
        out = target[start].clone()
        for t in range(depth):
            go = length > t
            if not go.any():
                break
            move = torch.randint(3, (int(go.sum()),), generator=g)
            z[go] = world_model.rollout(z[go], move[:, None])[:, -1]
            state[go] = nxt[state[go], move]
            out[go] = z[go]
        return out, poses[state]

    pool, held = train.nonzero()[:, 0], (~train).nonzero()[:, 0]
    z_fit, _ = sample(pool, 20_000)
    mean, std = z_fit.mean(0), z_fit.std(0).clamp_min(1e-6)
    torch.manual_seed(0)
    net = _Readout(target.shape[1], data.grid, 512)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        z, pose = sample(pool, batch)
        x, y, d = net((z - mean) / std)
        loss = F.cross_entropy(x, pose[:, 0]) + F.cross_entropy(y, pose[:, 1]) + F.cross_entropy(d, pose[:, 2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    readout = PoseReadout(net, mean, std)
    z, pose = sample(held, 4000)
    read = torch.as_tensor(readout(z.numpy()))
    right = read == pose
    step = torch.tensor([(1, 0), (0, 1), (-1, 0), (0, -1)])
    front = (read[:, :2] + step[read[:, 2]] == pose[:, :2] + step[pose[:, 2]]).all(1)
    print(f"rollout read-out on {val} held-out layouts, up to {depth} actions deep: cell {right[:, :2].all(1).float().mean():.1%}, "
          f"heading {right[:, 2].float().mean():.1%}, faced cell {front.float().mean():.1%}")
    if cache:
        torch.save(readout, cache)
    return readout


class WhereMetric:
    """``metric(states, goals) -> (M,)``: cells apart (L1 of the read-out's expected cells), plus ``turn`` for a
    heading other than the goal's, plus ``tie`` x latent L2. With ``cells``, a goal latent found there (the row's
    raw subgoal) takes its cell from it instead of the read-out."""

    def __init__(self, readout: PoseReadout, turn: float = 0.5, tie: float = 0.01) -> None:
        self.readout, self.turn, self.tie = readout, turn, tie
        self.cells: list[tuple[torch.Tensor, tuple[int, int]]] = []  # (raw z*, cell) of the last proposals

    def _read(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, d = self.readout.logits(z.float().cpu())
        ix = torch.arange(x.shape[1], dtype=torch.float32)
        iy = torch.arange(y.shape[1], dtype=torch.float32)
        return x.softmax(-1) @ ix, y.softmax(-1) @ iy, d.softmax(-1)

    @torch.no_grad()
    def __call__(self, states: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        sx, sy, sd = self._read(states)
        gx, gy, gd = self._read(goals[:1])
        for raw, (cx, cy) in self.cells:
            if torch.equal(raw.cpu(), goals[0].cpu()):
                gx, gy = torch.tensor([float(cx)]), torch.tensor([float(cy)])
        heading = gd[0].argmax()
        far = (sx - gx).abs() + (sy - gy).abs() + self.turn * (1 - sd[:, heading])
        return far + self.tie * torch.linalg.vector_norm(states.cpu() - goals.cpu(), dim=-1)


class FacingMetric(WhereMetric):
    """``metric(states, goals) -> (M,)``: how many cells (L1) the cell each state faces (its read-out pose) lies
    from the named object's cell, which the thinker's grounded read-out gives (its first query), plus ``tie`` x
    latent L2 to the raw subgoal. A reachable state facing the object scores ~0: the agent goes straight there."""

    @torch.no_grad()
    def __call__(self, states: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        pose = torch.as_tensor(self.readout(states.float().cpu().numpy()))
        step = torch.tensor([(1, 0), (0, 1), (-1, 0), (0, -1)])[pose[:, 2]]
        front = pose[:, :2] + step
        l2 = torch.linalg.vector_norm(states.cpu() - goals.cpu(), dim=-1)
        for raw, cell in self.cells:
            if torch.equal(raw.cpu(), goals[0].cpu()):
                return (front - torch.tensor(cell)).abs().sum(1).float() + self.tie * l2
        return l2


def router_cells(agent: HierarchicalPolicy, metric: WhereMetric, width: int, query: int = -1) -> None:
    """Make the thinker hand each proposal's cell (its grounded read-out's ``query``: -1 the next waypoint, 0 the
    named object) to ``metric``."""
    thinker = agent.subgoals.source.thinker
    head = thinker.head
    propose = thinker.propose

    def ask(images, instructions):
        hidden, inputs = thinker.encode(images, instructions)
        mask = thinker.image_mask(inputs)
        scores = head.grounding_scores(hidden, mask)  # (B, Q, S): named object, ..., next waypoint
        z = propose(images, instructions)
        metric.cells = []
        for j, (b, m) in enumerate(zip(scores, mask, strict=True)):
            c = int(b[query][m].argmax())
            metric.cells.append((z[j].detach().cpu(), (c % width, c // width)))
        return z

    thinker.propose = ask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--release", default="babyai-goto")
    p.add_argument("--goal", choices=["probe", "router", "object", "l2"], default="probe")
    p.add_argument("--seeds", type=int, default=1_000_000)
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--layouts", type=int, default=60, help="probe layouts (seeds 5,000,000+)")
    p.add_argument("--probe_cache", default=None, help="keep the fitted read-out here (torch.save) and reuse it")
    p.add_argument("--rollouts", action="store_true", help="fit the read-out on predicted latents (fit_rollout_probe)")
    p.add_argument("--turn", type=float, default=0.5)
    p.add_argument("--thinker", default=None, help="another thinker checkpoint for the release's world model")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    agent = HierarchicalPolicy.from_release(args.release)
    if args.thinker:
        from thinkjepa.policy.subgoals import ThinkerSubgoals
        from thinkjepa.thinker.checkpoint import load_thinker
        agent.subgoals.source = ThinkerSubgoals(load_thinker(args.thinker, world_model=agent.world_model))
    level = agent.built_for
    settings = release_settings(Release.open(args.release, verify=False))
    wm = agent.world_model
    if args.goal != "l2":
        start = time.perf_counter()
        readout = (fit_rollout_probe(wm, level, args.layouts, 5_000_000, settings.snap_depth, cache=args.probe_cache)
                   if args.rollouts else fit_probe(wm, level, args.layouts, 5_000_000, cache=args.probe_cache))
        metric = (FacingMetric if args.goal == "object" else WhereMetric)(readout, turn=args.turn)
        print(f"probe fitted in {time.perf_counter() - start:.0f} s")
        agent.subgoals.metric = metric
        if args.goal in ("router", "object"):
            env = make_env(level, image_size=wm.image_size)
            env.reset(seed=args.seeds)
            width = env.unwrapped.width
            env.close()
            router_cells(agent, metric, width, query=0 if args.goal == "object" else -1)
    out = Path(args.out)
    rows = []
    for first in range(args.seeds, args.seeds + args.episodes, args.batch):
        seeds = range(first, min(first + args.batch, args.seeds + args.episodes))
        demos = [demonstrate(level, s, wm.image_size) for s in seeds]
        results, _ = run_episodes(agent, "hierarchical", level, demos, wm.image_size, settings.max_steps)
        rows += [{"seed": r.seed, "success": r.success, "steps": r.steps, "expert_steps": r.expert_steps,
                  "thinker_calls": r.thinker_calls, "error": r.error} for r in results]
        ok = sum(r["success"] for r in rows)
        print(f"{len(rows)} episodes: {ok} successes", flush=True)
    ok = sum(r["success"] for r in rows)
    lo, hi = wilson_interval(ok, len(rows))
    print(f"{args.goal}: {ok}/{len(rows)} ({lo:.0%}-{hi:.0%})")
    atomic_write_text(out / "results.json", json.dumps({"args": vars(args), "successes": ok, "episodes": rows}, indent=1))


if __name__ == "__main__":
    main()
