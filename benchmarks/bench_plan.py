"""Batched CEM versus the one-episode-at-a-time reference, on a world-model rollout (``make bench-plan``).

Both planners run the same math (300 samples × 30 iterations × horizon 5 by default) on the same
``B`` episodes with reachable goals; the batched :class:`~thinkjepa.planning.CEMPlanner` makes one
rollout call of ``B·300`` rows per iteration, the :class:`~thinkjepa.planning.reference.ReferenceCEMPlanner`
makes ``B`` calls of 300 rows. Prints both wall times, the time per episode, the speed-up and the mean
final cost of each (a sanity check that the batched planner is not faster because it is worse).

Three timings on the same model and episodes:

* ``reference``: one episode at a time, every candidate rolled out independently, no warm start —
  the way public JEPA planners are written;
* ``batched``: all episodes in one rollout call per iteration, still rolling every candidate out;
* ``batched + shared prefixes``: the same, with the world model evaluating each distinct
  (start, action prefix) once (:meth:`thinkjepa.worldmodel.JEPA.rollout`); only a world model
  (``--wm``) offers this.

Without ``--wm`` the rollout is a stand-in: a random-weight MLP predictor (latent 128, 7 discrete
actions through an embedding, hidden 256), see :func:`load_rollout`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch
from torch import nn

from thinkjepa.planning import CEMPlanner, DiscreteSpace, GoalCost
from thinkjepa.planning.reference import ReferenceCEMPlanner
from thinkjepa.protocols import RolloutFn

T = TypeVar("T")


class StandInPredictor(nn.Module):
    """Residual MLP predictor ``z_{t+1} = z_t + MLP([z_t, embed(a_t)])`` with random weights.

    Args:
        latent_dim: Latent size ``D``.
        num_actions: Discrete actions ``K``.
        hidden: MLP hidden width.
        action_dim: Action embedding size.
    """

    def __init__(
        self, latent_dim: int = 128, num_actions: int = 7, hidden: int = 256, action_dim: int = 32
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.action_embed = nn.Embedding(num_actions, action_dim)
        self.net = nn.Sequential(
            nn.Linear(latent_dim + action_dim, hidden), nn.GELU(), nn.Linear(hidden, latent_dim)
        )

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``z0 (M, D)``, actions ``long (M, H)`` or probabilities ``(M, H, K)`` -> ``(M, H, D)``."""
        if actions.dtype == torch.long:
            embedded = self.action_embed(actions)  # (M, H, E)
        else:
            embedded = actions @ self.action_embed.weight  # (M, H, E): expected embedding
        z, out = z0, []
        for t in range(embedded.shape[1]):
            z = z + self.net(torch.cat([z, embedded[:, t]], dim=-1))  # (M, D)
            out.append(z)
        return torch.stack(out, dim=1)  # (M, H, D)


def load_rollout(wm_path: str | None, device: torch.device) -> tuple[RolloutFn, RolloutFn | None, int]:
    """The rollout to plan with and its latent dim: a trained world model, or the stand-in.

    Args:
        wm_path: World-model checkpoint directory, or ``None`` for the random-weight stand-in.
        device: Where the model runs.

    Returns:
        The plain rollout, the prefix-sharing rollout (``None`` for the stand-in), the latent dim.
    """
    if wm_path is None:
        with torch.random.fork_rng(devices=[]):  # fixed random weights, caller's RNG untouched
            torch.manual_seed(0)
            model = StandInPredictor()
        model = model.to(device).eval()
        return model.rollout, None, model.latent_dim
    # The real world model plugs in here: anything with `.rollout(z0, actions)` and `.latent_dim`
    # (thinkjepa.protocols.WorldModel) taking discrete BabyAI action ids.
    from thinkjepa.worldmodel import load_world_model  # imported here: optional until it exists

    world_model = load_world_model(wm_path, device=device)
    return (partial(world_model.rollout, share_prefixes=False), partial(world_model.rollout, share_prefixes=True),
            world_model.latent_dim)


def _timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="episodes B planned together")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--wm", default=None, help="world-model checkpoint (default: random stand-in MLP)")
    parser.add_argument("--samples", type=int, default=300, help="CEM samples per iteration")
    parser.add_argument("--iterations", type=int, default=30, help="CEM iterations")
    parser.add_argument("--horizon", type=int, default=5, help="plan length")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--actions", type=int, nargs="+", default=[0, 1, 2, 5],
                        help="allowed action ids (default: BabyAI navigation left, right, forward, toggle)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved timing runs; the fastest of each counts"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rollout, shared_rollout, latent_dim = load_rollout(args.wm, device)
    space = DiscreteSpace(7, allowed=tuple(args.actions))
    kwargs = {"num_samples": args.samples, "iterations": args.iterations, "num_elites": 30}
    batched, reference = CEMPlanner(args.horizon, **kwargs), ReferenceCEMPlanner(args.horizon, **kwargs)

    data = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        z0 = torch.randn(args.batch, latent_dim, generator=data, device=device)  # (B, D)
        allowed = torch.tensor(args.actions, device=device)
        true_actions = allowed[torch.randint(0, len(allowed), (args.batch, args.horizon), generator=data, device=device)]
        goal = rollout(z0, true_actions)[:, -1]  # (B, D): reachable in `horizon` steps
    cost = GoalCost(goal)

    warm = CEMPlanner(args.horizon, num_samples=8, iterations=2, num_elites=2)  # first-call overheads
    warm.plan(z0[:1], cost.select(0), rollout, space)

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(1)

    # interleaved and best-of-n, so load from other processes on a shared machine hits both alike
    t_ours = t_ref = t_shared = float("inf")
    shared = None
    for _ in range(args.repeats):
        ours, t = _timed(lambda: batched.plan(z0, cost, rollout, space, generator=gen()), device)
        t_ours = min(t_ours, t)
        ref, t = _timed(lambda: reference.plan(z0, cost, rollout, space, generator=gen()), device)
        t_ref = min(t_ref, t)
        if shared_rollout is not None:
            shared, t = _timed(lambda: batched.plan(z0, cost, shared_rollout, space, generator=gen()), device)
            t_shared = min(t_shared, t)

    b = args.batch
    print(
        f"device={device} threads={torch.get_num_threads()} B={b} N={args.samples} iters={args.iterations} "
        f"H={args.horizon} D={latent_dim} wm={args.wm or 'stand-in MLP'} best of {args.repeats}"
    )
    print(
        f"batched   CEMPlanner         : {t_ours:8.3f} s  ({t_ours / b * 1e3:8.1f} ms/episode)  "
        f"mean cost {ours.cost.mean().item():.4f}"
    )
    print(
        f"reference ReferenceCEMPlanner: {t_ref:8.3f} s  ({t_ref / b * 1e3:8.1f} ms/episode)  "
        f"mean cost {ref.cost.mean().item():.4f}"
    )
    if shared is not None:
        print(
            f"batched   CEMPlanner + shared prefixes: {t_shared:8.3f} s  ({t_shared / b * 1e3:8.1f} ms/episode)  "
            f"mean cost {shared.cost.mean().item():.4f}"
        )
    print(f"speed-up (reference / batched): {t_ref / t_ours:.2f}x")
    if shared is not None:
        print(f"speed-up (reference / batched + shared prefixes): {t_ref / t_shared:.2f}x")


if __name__ == "__main__":
    main()
