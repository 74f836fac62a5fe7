"""This project's CEM planner against stable-worldmodel's ``CEMSolver`` on the same world model, budget and machine
(``make bench-plan-swm``; needs the swm extra).

The world model is LeWM-shaped (latent 192, a predictor of two 1024-wide hidden layers, 2-D actions in blocks of
5: 10-D planned actions) with random weights: planning time does not depend on what the weights learned. Both
planners get the protocol's budget (300 samples × 30 iterations, top 30, horizon 5) on ``B`` episodes with
reachable goals (the latent reached by a random plan) and the same cost, the squared latent distance to the goal
after the last block. Printed per planner: wall time per solve, the final cost it reached (mean over episodes),
and the world-model evaluations it spent (rows rolled out × horizon) — cost reached per evaluation, not only time.
A third row runs our CEM with iCEM's shrinking population and an early stop once the elites agree.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from thinkjepa.planning import CEMPlanner, GoalCost
from thinkjepa.planning.spaces import BoxSpace

LATENT, HIDDEN, ACTION, BLOCK = 192, 1024, 2, 5


class LeWMShaped(nn.Module):
    """``z' = z + MLP([z, a])``: two hidden layers of 1024, the action a block of 5 two-dimensional actions."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(LATENT + ACTION * BLOCK, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN),
                                 nn.GELU(), nn.Linear(HIDDEN, LATENT))
        self.evaluations = 0

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z, out = z0, []
        for t in range(actions.shape[1]):
            z = z + self.net(torch.cat([z, actions[:, t].to(z.dtype)], dim=-1))
            out.append(z)
        self.evaluations += actions.shape[0] * actions.shape[1]
        return torch.stack(out, dim=1)


class SWMCost:
    """The same world model and cost as stable-worldmodel's ``Costable``: ``get_cost(info, candidates (B, N, H, A))``."""

    def __init__(self, model: LeWMShaped) -> None:
        self.model = model

    def parameters(self):
        return self.model.parameters()

    def get_cost(self, info: dict, candidates: torch.Tensor) -> torch.Tensor:
        b, n, h, a = candidates.shape
        z0, goal = info["z0"].reshape(b * n, -1), info["goal"].reshape(b * n, -1)
        final = self.model.rollout(z0, candidates.reshape(b * n, h, a))[:, -1]
        return (final - goal).pow(2).sum(-1).view(b, n)

    criterion = get_cost


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="episodes B solved together")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--elites", type=int, default=30)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="solves timed per planner (the median is printed)")
    parser.add_argument("--decay", type=float, default=0.9, help="population decay of the lean CEM row (iCEM)")
    parser.add_argument("--converge", type=float, default=0.03,
                        help="the lean CEM row stops once every std is below this many half-widths")
    args = parser.parse_args(argv)
    from stable_worldmodel.solver.cem import CEMSolver

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LeWMShaped().eval().requires_grad_(False)
    space = BoxSpace(-1.0, 1.0, dim=ACTION * BLOCK)
    print(f"LeWM-shaped world model (latent {LATENT}, 2 x {HIDDEN} hidden, {ACTION}-D actions in blocks of {BLOCK}); "
          f"CEM {args.samples} x {args.iterations}, top {args.elites}, horizon {args.horizon}; "
          f"{args.threads} torch threads")
    print("| B | planner | s per solve | final cost (mean) | no-move cost | model evaluations |")
    print("|---|---|---|---|---|---|")
    for b in args.batch:
        g = torch.Generator().manual_seed(b)
        z0 = torch.randn(b, LATENT, generator=g)
        with torch.no_grad():
            goal = model.rollout(z0, torch.rand(b, args.horizon, ACTION * BLOCK, generator=g) * 2 - 1)[:, -1]
        ours = CEMPlanner(horizon=args.horizon, num_samples=args.samples, iterations=args.iterations,
                          num_elites=args.elites)
        solver = CEMSolver(SWMCost(model), batch_size=b, num_samples=args.samples, n_steps=args.iterations,
                           topk=args.elites, seed=0)
        solver.configure(action_space=gym.spaces.Box(-1, 1, (b, ACTION), np.float32), n_envs=b,
                         config=SimpleNamespace(horizon=args.horizon, action_block=BLOCK))
        with torch.no_grad():
            still = float((model.rollout(z0, torch.zeros(b, args.horizon, ACTION * BLOCK))[:, -1] - goal).pow(2).sum(-1).mean())
        rows = []
        lean = CEMPlanner(horizon=args.horizon, num_samples=args.samples, iterations=args.iterations,
                          num_elites=args.elites, population_decay=args.decay, converge_std=args.converge)
        cost = GoalCost(goal, weights="final", metric="sq_l2")
        for name, solve in (
            ("thinkjepa CEMPlanner", partial(ours.plan, z0, cost, model.rollout, space, generator=torch.Generator())),
            (f"thinkjepa CEMPlanner, decay {args.decay}, stop at std {args.converge}",
             partial(lean.plan, z0, cost, model.rollout, space, generator=torch.Generator())),
            ("stable-worldmodel CEMSolver", partial(solver.solve, {"z0": z0, "goal": goal})),
        ):
            times, costs, evaluations = [], [], 0
            for _ in range(args.repeats):
                model.evaluations = 0
                with torch.no_grad():
                    result, seconds = timed(solve)
                times.append(seconds)
                evaluations = model.evaluations
                actions = result.actions if hasattr(result, "actions") else result["actions"]
                with torch.no_grad():
                    final = model.rollout(z0, actions.reshape(b, args.horizon, -1).clamp(-1, 1))[:, -1]
                costs.append(float((final - goal).pow(2).sum(-1).mean()))
            rows.append((name, float(np.median(times)), float(np.mean(costs)), evaluations))
        for name, seconds, cost, evaluations in rows:
            print(f"| {b} | {name} | {seconds:.3f} | {cost:.4f} | {still:.4f} | {evaluations:,} |")


if __name__ == "__main__":
    main()
