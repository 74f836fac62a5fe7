"""How good can a thinker be in this latent space? Retrieval ceilings for the thinker's metric.

The thinker is scored by top-1 retrieval: among all frames of a held-out episode (and its waypoint
renders), is the proposal z* nearest the true subgoal latent? A low score can mean two different
things — the latent space does not tell the subgoal frames apart, or the thinker does not find the
subgoal. This script separates them on the same held-out episodes the thinker is validated on:

* ``copy``: z* = the current frame's latent (0 unless the agent already stands at its subgoal);
* ``target + noise (mse m)``: the true latent with isotropic Gaussian noise of per-element variance m;
* ``copy→target a``: the point a of the way from the current latent to the target;
* ``state decoder``: an MLP from the one-hot *waypoint state* (x, y, heading) alone to the target
  latent, trained on the training episodes — what a thinker that found the exact subgoal cell, but
  knew nothing else about the scene, would score (needs ``waypoint`` subgoals, which record the state);
* ``z_t + waypoint state``: the same state plus the current latent, predicting ``z_t + Δ`` — the ceiling
  of a residual thinker head that found the exact subgoal state;
* ``z_t + mission`` / ``z_t`` only: an MLP from the current latent and the mission's words (or the
  current latent alone) to the target — a thinker without vision beyond the world model's latent.

``python experiments/thinker_ceiling.py --wm checkpoints/wm/babyai-gpu-distance/world_model``
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.data.latents import encode_fixed_batches, stacked
from thinkjepa.thinker.metrics import SubgoalRetrieval
from thinkjepa.train.thinker_data import ThinkerDataModule
from thinkjepa.worldmodel.export import load_world_model

WORDS = ("red", "green", "blue", "purple", "yellow", "grey", "ball", "box", "key", "door")


def waypoint_states(ds, keys: list[int], grid: int) -> torch.Tensor:
    """One-hot ``(x, y, heading)`` of each sample's waypoint; zeros where it falls back."""
    out = torch.zeros(len(keys), 2 * grid + 4)
    for row, k in enumerate(keys):
        e, t = ds.samples[k]
        seg = [w for w in ds.store.meta(e).waypoints if w.start <= t < w.end]
        if seg:
            x, y, d = seg[0].state
            out[row, [x, grid + y, 2 * grid + d]] = 1.0
    return out


def mission_words(ds, keys: list[int]) -> torch.Tensor:
    return torch.tensor(
        [[float(w in ds.store.meta(ds.samples[k][0]).mission.split()) for w in WORDS] for k in keys]
    )


def fit_decoder(x: torch.Tensor, base: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> nn.Module:
    """MLP with ``base + MLP(x) ≈ y`` (squared error summed over the latent), AdamW, batch 256."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(x.shape[1], 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, y.shape[1])
    )
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,))
        loss = (base[idx] + net(x[idx]) - y[idx]).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wm", required=True, help="exported world model (or .ckpt)")
    p.add_argument("--data", default="data/babyai-tiny")
    p.add_argument(
        "--level", default="BabyAI-GoTo-v0", help="held-out level scored (as the thinker recipe's val_levels)"
    )
    p.add_argument("--steps", type=int, default=3000, help="training steps of each decoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    wm = load_world_model(args.wm).eval()
    dm = ThinkerDataModule(root=args.data, subgoal_source="waypoint", val_levels=[args.level], seed=args.seed)
    dm.setup()
    train, val = dm.train_set, dm.val_set
    tr = [k for k, (e, _) in enumerate(train.samples) if train.store.meta(e).level == args.level]
    va = list(range(len(val)))
    grid = 1 + max(max(w.state[:2]) for e in train.episodes for w in train.store.meta(e).waypoints)
    with torch.no_grad():
        zc, zt, vc, vt = (
            torch.from_numpy(encode_fixed_batches(wm.target_encode, stacked(image, keys, 256)))
            for image, keys in (
                (train.current_image, tr),
                (train.subgoal_image, tr),
                (val.current_image, va),
                (val.subgoal_image, va),
            )
        )
        cands = {
            e: torch.from_numpy(encode_fixed_batches(wm.target_encode, [val.candidate_images(e)]))
            for e in val.episodes
        }
    candidates = [cands[val.samples[k][0]] for k in va]

    def top1(z: torch.Tensor) -> float:
        metric = SubgoalRetrieval()
        metric.update(z, vt, candidates)
        return round(float(metric.compute()), 4)

    gen = torch.Generator().manual_seed(args.seed)
    rows: dict[str, float] = {"copy": top1(vc)}
    for m in (0.01, 0.05, 0.2):
        rows[f"target + noise (mse {m})"] = top1(vt + m**0.5 * torch.randn(vt.shape, generator=gen))
    for a in (0.5, 0.75):
        rows[f"copy→target {a}"] = top1(vc + a * (vt - vc))
    zeros_t = torch.zeros_like(zt)
    s_tr, s_va = waypoint_states(train, tr, grid), waypoint_states(val, va, grid)
    net = fit_decoder(s_tr, zeros_t, zt, args.steps, args.seed)
    with torch.no_grad():
        rows["state decoder"] = top1(net(s_va))
    w_tr, w_va = mission_words(train, tr), mission_words(val, va)
    for name, (x_tr, x_va) in {
        "z_t + waypoint state": (torch.cat([zc, s_tr], 1), torch.cat([vc, s_va], 1)),
        "z_t + mission": (torch.cat([zc, w_tr], 1), torch.cat([vc, w_va], 1)),
        "z_t only": (zc, vc),
    }.items():
        net = fit_decoder(x_tr, zc, zt, args.steps, args.seed)
        with torch.no_grad():
            rows[name] = top1(vc + net(x_va))
    result = {
        "world_model": args.wm,
        "level": args.level,
        "train_samples": len(tr),
        "val_samples": len(va),
        "val_episodes": len(val.episodes),
        "copy_mse": round(float((vc - vt).pow(2).mean()), 4),
        "top1": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    width = max(map(len, rows))
    print(f"{args.level}: {len(va)} held-out samples from {len(val.episodes)} episodes (train {len(tr)})")
    for name, value in rows.items():
        print(f"  {name:<{width}}  top-1 {value:.1%}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
