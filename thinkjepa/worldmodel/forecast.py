"""Forecasting without actions: JEPA-only, VLM-only and VLM-guided predictors on held-out bot episodes.

The question a guided predictor answers: from a frame and the instruction, where will the agent be 1..H steps
from now, when nobody says which actions it will take? The bot walks to the object the instruction names, so an
instruction-blind forecaster can only guess the direction, while a VLM that grounds the instruction knows it.

From each anchor frame ``t`` of an episode (every ``anchor_stride`` steps while ``t + horizon`` stays inside it):

* ``copy``         ``ẑ_{t+k} = z_t`` (the agent stands still), the floor every forecaster must beat;
* ``jepa-zero``    the world model's predictor as trained, rolled out with no action (a zero action embedding);
* ``jepa``         the same predictor fine-tuned to forecast without actions (``guidance_dim = 0``);
* ``vlm``          a read-out of the VLM's guidance vector alone: an MLP from ``c`` to the ``H`` future latents;
* ``guided``       the same predictor with gated FiLM guidance (``guidance_dim = C``, zero-initialised, so it
                   starts as ``jepa``), fine-tuned exactly as ``jepa`` is;
* ``guided-blind`` (with ``neutral``) the same, guided by the VLM reading a neutral instruction instead of the
                   episode's: what the instruction itself adds;
* ``true``         the true future latents (what the position read-out gets right on real latents: its ceiling).

Scores on held-out episodes: the latent error (mean squared, per dimension) and the error of the agent's cell
decoded from the forecast latent by a read-out fitted on the training episodes' true latents, in cells: at each
horizon, ADE (mean over 1..H) and FDE (at H). Intervals: 95 % bootstrap over held-out episodes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.latents import encode_fixed_batches
from thinkjepa.envs.babyai import make_env
from thinkjepa.worldmodel.jepa import JEPA
from thinkjepa.worldmodel.predictor import with_guidance
from thinkjepa.worldmodel.probe import PoseReadout, fit_pose_probe

ROWS = ("copy", "jepa-zero", "jepa", "vlm", "guided", "guided-blind", "true")


def agent_poses(store: EpisodeStore, i: int) -> np.ndarray:
    """``int (T + 1, 3)``: the agent's ``(x, y, heading)`` at every frame of episode ``i``, by replaying its
    actions from its seed (the first and last frames are checked against the stored ones)."""
    meta = store.meta(i)
    env = make_env(meta.level, image_size=store.image_size)
    obs, _ = env.reset(seed=meta.seed)
    frames = store.frames(i)
    base = env.unwrapped
    poses = [(int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir))]
    first = np.array_equal(obs, frames[0])
    for action in store.actions(i):
        obs, *_ = env.step(int(action))
        poses.append((int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir)))
    env.close()
    if not (first and np.array_equal(obs, frames[-1])):
        raise ValueError(f"episode {i} ({meta.level}, seed {meta.seed}): the replayed frames differ from the stored "
                         "ones (another BabyAI version or image size?)")
    return np.asarray(poses, dtype=np.int64)


@dataclass
class ForecastSet:
    """Anchors of a set of episodes: ``z0 (N, D)``, ``future (N, H, D)`` latents, ``guidance (N, C)``, agent
    cells ``cells (N, H + 1, 2)`` (anchor first) and the episode of each anchor ``episode (N,)``; ``blind (N, C)``:
    the guidance for a neutral instruction, when asked for."""

    z0: torch.Tensor
    future: torch.Tensor
    guidance: torch.Tensor
    cells: np.ndarray
    episode: np.ndarray
    blind: torch.Tensor | None = None

    def without_instruction(self) -> ForecastSet:
        """The same anchors guided by the neutral instruction's vectors."""
        if self.blind is None:
            raise ValueError("this set was built without a neutral instruction")
        return dataclasses.replace(self, guidance=self.blind, blind=None)

    def __len__(self) -> int:
        return len(self.z0)


def build_sets(store: EpisodeStore, world_model: JEPA, guidance: Callable[[np.ndarray, list[str]], torch.Tensor],
               episodes: Sequence[int], horizon: int, anchor_stride: int, batch_size: int = 128,
               neutral: str | None = None) -> tuple[ForecastSet, np.ndarray, np.ndarray, dict[str, float]]:
    """The anchors of ``episodes``; also every frame's latent and pose (for the read-out) and the seconds spent.
    ``neutral``: also the guidance for this instruction in place of each episode's."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    poses = {i: agent_poses(store, i) for i in episodes}
    seconds["replay"] = time.perf_counter() - start
    start = time.perf_counter()
    frames = [store.frames(i) for i in episodes]
    device = next(world_model.parameters()).device
    with torch.no_grad():
        latents = encode_fixed_batches(lambda x: world_model.target_encode(x.to(device)), frames, batch_size)
    seconds["encode"] = time.perf_counter() - start
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in frames])])
    rows, z0, future, cells, which = [], [], [], [], []
    for j, i in enumerate(episodes):
        z = latents[offsets[j]: offsets[j + 1]]
        for t in range(0, len(z) - horizon, anchor_stride):
            rows.append((i, t))
            z0.append(z[t])
            future.append(z[t + 1: t + 1 + horizon])
            cells.append(poses[i][t: t + 1 + horizon, :2])
            which.append(i)
    if not rows:
        raise ValueError(f"no episode of {store.root} is longer than the horizon {horizon}")
    start = time.perf_counter()
    vectors, blind = [], []
    for k in range(0, len(rows), batch_size):
        chunk = rows[k: k + batch_size]
        images = np.stack([store.frames(i)[t] for i, t in chunk])
        vectors.append(guidance(images, [store.meta(i).mission for i, _ in chunk]).float().cpu())
        if neutral is not None:
            blind.append(guidance(images, [neutral] * len(chunk)).float().cpu())
    seconds["guidance"] = time.perf_counter() - start
    data = ForecastSet(torch.as_tensor(np.stack(z0)), torch.as_tensor(np.stack(future)), torch.cat(vectors).float(),
                       np.stack(cells), np.asarray(which), torch.cat(blind) if blind else None)
    return data, latents, np.concatenate([poses[i] for i in episodes]), seconds


class VLMOnly(nn.Module):
    """``c -> (H, D)``: the future latents from the guidance vector alone."""

    def __init__(self, guidance_dim: int, latent_dim: int, horizon: int, hidden: int = 512) -> None:
        super().__init__()
        self.horizon, self.latent_dim = horizon, latent_dim
        self.net = nn.Sequential(nn.LayerNorm(guidance_dim), nn.Linear(guidance_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon * latent_dim))

    def forward(self, z0: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        return self.net(guidance).view(-1, self.horizon, self.latent_dim)


class PredictorForecaster(nn.Module):
    """The world model's predictor (a copy, optionally with guidance FiLM) rolled out without actions."""

    def __init__(self, world_model: JEPA, guidance_dim: int = 0) -> None:
        super().__init__()
        self.model = copy.deepcopy(world_model)
        if guidance_dim:
            self.model.predictor = with_guidance(world_model.predictor, guidance_dim)
        self.model.requires_grad_(False)
        self.model.predictor.requires_grad_(True)  # the encoders stay as they are
        self.guided = guidance_dim > 0

    def forward(self, z0: torch.Tensor, guidance: torch.Tensor, horizon: int) -> torch.Tensor:
        return self.model.forecast(z0, horizon, guidance if self.guided else None)


def fit_forecaster(model: nn.Module, train: ForecastSet, steps: int, batch_size: int = 64, lr: float = 3e-4,
                   seed: int = 0, readout: PoseReadout | None = None, position_weight: float = 0.0) -> list[float]:
    """Fit ``model(z0, guidance[, horizon]) -> (B, H, D)`` to the true future latents (mean squared error over the
    whole horizon); returns the loss every 100 steps.

    ``position_weight > 0`` adds the cross-entropy of the agent's true cell under the frozen ``readout`` of each
    forecast latent, weighted so: a forecast must then also decode to where the agent will be, where mean squared
    error alone pulls an uncertain future to the average of its latents, which decodes to no real place.
    """
    if position_weight < 0 or (position_weight > 0 and readout is None):
        raise ValueError(f"position_weight must be >= 0 and needs a readout; got {position_weight}, readout={readout}")
    horizon = train.future.shape[1]
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    if readout is not None:
        readout.to(device)
    cells = torch.as_tensor(train.cells[:, 1:], dtype=torch.long)  # (N, H, 2): the agent's cell after 1..H steps
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for step in range(steps):
        b = torch.randint(len(train), (batch_size,), generator=g)
        pred = _predict(model, train.z0[b].to(device), train.guidance[b].to(device), horizon)
        loss = F.mse_loss(pred, train.future[b].to(device))
        if position_weight > 0:
            x, y, _ = readout.logits(pred.reshape(-1, pred.shape[-1]))
            target = cells[b].reshape(-1, 2).to(device)
            loss = loss + position_weight * (F.cross_entropy(x, target[:, 0]) + F.cross_entropy(y, target[:, 1]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def _predict(model: nn.Module, z0: torch.Tensor, guidance: torch.Tensor, horizon: int) -> torch.Tensor:
    return model(z0, guidance, horizon) if isinstance(model, PredictorForecaster) else model(z0, guidance)


@torch.no_grad()
def forecast_rows(world_model: JEPA, models: dict[str, nn.Module], test: ForecastSet,
                  tests: dict[str, ForecastSet] | None = None) -> dict[str, torch.Tensor]:
    """``{row: (N, H, D)}`` forecasts of every row of :data:`ROWS` on ``test`` (``tests[name]``: the same anchors
    with other guidance for that model)."""
    horizon = test.future.shape[1]
    device = next(world_model.parameters()).device

    def chunks(data: ForecastSet) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(data.z0[k: k + 512].to(device), data.guidance[k: k + 512].to(device)) for k in range(0, len(data), 512)]

    out = {"copy": test.z0[:, None].expand(-1, horizon, -1), "true": test.future}
    world_model.eval()
    out["jepa-zero"] = torch.cat([world_model.forecast(z0, horizon).cpu() for z0, _ in chunks(test)])
    for name, model in models.items():
        model.eval()
        out[name] = torch.cat([_predict(model, z0, c, horizon).cpu() for z0, c in chunks((tests or {}).get(name, test))])
    return out


def bootstrap_interval(values: np.ndarray, groups: np.ndarray, resamples: int = 1000, seed: int = 0
                       ) -> tuple[float, float]:
    """95 % interval of the mean of ``values`` by resampling whole ``groups`` (episodes) with replacement."""
    ids = np.unique(groups)
    per = [values[groups == i] for i in ids]
    sums, counts = np.array([p.sum() for p in per]), np.array([len(p) for p in per])
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(ids), size=(resamples, len(ids)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def score(forecasts: dict[str, torch.Tensor], test: ForecastSet, decode: Callable[[np.ndarray], np.ndarray],
          horizons: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per row: latent error and decoded-cell displacement at ``horizons``, ADE and FDE, each with its interval."""
    truth = test.cells[:, 1:].astype(np.float64)  # (N, H, 2)
    n, horizon = truth.shape[:2]
    table = {}
    for name, pred in forecasts.items():
        latent = ((pred - test.future) ** 2).mean(-1).numpy()  # (N, H)
        cells = decode(pred.reshape(n * horizon, -1).numpy())[:, :2].reshape(n, horizon, 2).astype(np.float64)
        displacement = np.linalg.norm(cells - truth, axis=-1)  # (N, H), in cells
        row: dict[str, Any] = {}
        for label, values in ([("ade", displacement.mean(1)), ("fde", displacement[:, -1])]
                              + [(f"de@{h}", displacement[:, h - 1]) for h in horizons]
                              + [(f"latent@{h}", latent[:, h - 1]) for h in horizons]):
            row[label] = {"mean": float(values.mean()), "ci95": bootstrap_interval(values, test.episode)}
        table[name] = row
    return table


def run_forecast_benchmark(store: EpisodeStore, world_model: JEPA,
                           guidance: Callable[[np.ndarray, list[str]], torch.Tensor], guidance_dim: int,
                           horizon: int = 16, anchor_stride: int = 8, held_out: float = 0.2, steps: int = 1500,
                           readout_steps: int = 2000, horizons: Sequence[int] = (1, 2, 4, 8, 16), seed: int = 0,
                           neutral: str | None = None, position_weight: float = 0.0,
                           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the anchors, fit the read-out and the three trained rows on the training episodes, score every row
    on the held-out ones (the last ``held_out`` share of the store's episodes). Models train on the world model's
    device; ``guidance`` returns its vectors from wherever it runs. ``neutral``: also the ``guided-blind`` row.
    ``position_weight``: every trained row also learns to decode to the agent's cell (:func:`fit_forecaster`)."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    horizons = sorted({h for h in horizons if h <= horizon} | {horizon})
    n = len(store)
    cut = int(round(n * (1 - held_out)))
    if cut < 1 or cut >= n:
        raise ValueError(f"{n} episodes leave no training or no held-out episode at held_out={held_out}")
    timings: dict[str, float] = {}
    world_model.eval()
    train, train_latents, train_poses, t1 = build_sets(store, world_model, guidance, range(cut), horizon, anchor_stride,
                                                       neutral=neutral)
    test, _, _, t2 = build_sets(store, world_model, guidance, range(cut, n), horizon, anchor_stride, neutral=neutral)
    timings.update({k: t1[k] + t2[k] for k in t1})
    log(f"anchors: {len(train)} training ({cut} episodes), {len(test)} held-out ({n - cut} episodes)")
    start = time.perf_counter()
    env = make_env(store.meta(0).level, image_size=store.image_size)
    env.reset(seed=store.meta(0).seed)
    grid = (env.unwrapped.width, env.unwrapped.height)
    env.close()
    layout = SimpleNamespace(poses=train_poses, grid=grid)
    decode = fit_pose_probe(train_latents, layout, np.ones(len(train_poses), bool), steps=readout_steps, seed=seed)
    timings["readout"] = time.perf_counter() - start
    torch.manual_seed(seed)
    models: dict[str, nn.Module] = {
        "jepa": PredictorForecaster(world_model),
        "vlm": VLMOnly(guidance_dim, world_model.latent_dim, horizon),
        "guided": PredictorForecaster(world_model, guidance_dim),
    }
    trains, tests = {}, {}
    if neutral is not None:
        models["guided-blind"] = PredictorForecaster(world_model, guidance_dim)
        trains["guided-blind"], tests["guided-blind"] = train.without_instruction(), test.without_instruction()
    curves = {}
    for name, model in models.items():
        model.to(next(world_model.parameters()).device)
        start = time.perf_counter()
        curves[name] = fit_forecaster(model, trains.get(name, train), steps, lr=1e-3 if name == "vlm" else 3e-4,
                                      seed=seed, readout=decode, position_weight=position_weight)
        timings[f"fit {name}"] = time.perf_counter() - start
        log(f"{name}: loss {curves[name][0]:.4f} -> {curves[name][-1]:.4f} ({timings[f'fit {name}']:.0f} s)")
    table = score(forecast_rows(world_model, models, test, tests), test, decode, horizons)
    return {"table": table, "horizon": horizon, "horizons": horizons, "train_anchors": len(train),
            "test_anchors": len(test), "train_episodes": cut, "test_episodes": n - cut, "grid": list(grid),
            "loss_curves": curves, "seconds": timings, "guidance_dim": guidance_dim, "steps": steps,
            "position_weight": position_weight}


def markdown_table(result: dict[str, Any]) -> str:
    """The benchmark's table: one row per forecaster, ADE / FDE / displacement at each horizon (cells)."""
    horizons = result["horizons"]
    head = ["forecaster", "ADE (cells)", "FDE (cells)", *[f"@{h}" for h in horizons], *[f"latent @{h}" for h in horizons]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(entry: dict[str, Any]) -> str:
        lo, hi = entry["ci95"]
        return f"{entry['mean']:.2f} [{lo:.2f}, {hi:.2f}]"

    for name in ROWS:
        row = result["table"].get(name)
        if row is None:
            continue
        values = [cell(row["ade"]), cell(row["fde"]), *[f"{row[f'de@{h}']['mean']:.2f}" for h in horizons],
                  *[f"{row[f'latent@{h}']['mean']:.3f}" for h in horizons]]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)
