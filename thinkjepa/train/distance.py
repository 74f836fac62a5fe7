"""Goal distance: how many actions separate a (predicted) latent from a goal latent.

Latent L2 is a good planning cost only near the goal. A JEPA latent can say *where* the agent is
without saying *how far* that is from somewhere else: on BabyAI the flattened patch read-out puts
the agent in a cell the way a one-hot does, so two different cells are about equally far apart.
Along the bot's own GoToLocal paths the L2 distance to the goal latent stops shrinking two steps out
(mean 5.7 at 2 steps to go, 5.6 at 10), and flat planning with a horizon of 6 fails on far goals.

:class:`GoalDistance` is a small head on the frozen latent space that predicts the number of
actions from ``z`` to ``goal`` (a distribution over ``0..max_distance``; its mean is the cost). It
is trained by :class:`DistanceModule` (stage 3) on pairs of rendered agent states of seeded layouts,
labelled with their exact step distance (:mod:`thinkjepa.data.poses`) — privileged supervision from
the simulator, used only to train the cost, never at planning time. The start of each pair is fed
either as its true latent or as the world model's own open-loop prediction after a few random
actions, labelled with the distance from where those actions really lead: the cost must hold on the
predicted latents a planner scores. The head is exported with the world model; planners use it when
present (:class:`~thinkjepa.policy.mpc.LatentMPC`, ``cost="auto"``), and flat and hierarchical
agents then plan with the same cost.
"""

from __future__ import annotations

from dataclasses import asdict

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from thinkjepa.configs import as_dataclass
from thinkjepa.data.latents import Encode, encode_fixed_batches
from thinkjepa.data.poses import MOVES, UNREACHABLE, pose_frames
from thinkjepa.envs.seeds import check_training_seeds
from thinkjepa.optim import OptimConfig, adamw_warmup_cosine
from thinkjepa.train.worldmodel import export_on_fit_end
from thinkjepa.worldmodel.export import world_model_part
from thinkjepa.worldmodel.goal_distance import DistanceConfig, GoalDistance
from thinkjepa.worldmodel.jepa import JEPA


class PosePairs(Dataset):
    """Random (start, actions, goal, distance) pairs over the states of some layouts; item ``k`` is
    one whole batch drawn from a generator seeded with ``(seed, k)``, so a resumed run sees the
    same batches.

    Args:
        latents: ``(N, D)`` latents of every rendered state.
        next_state: ``(N, 3)`` successor state of left / right / forward.
        distances: per layout ``(P, P)`` step distances (layout-local).
        offsets: ``(L + 1,)`` first state of each layout.
        layouts: which layouts to draw from.
        batch_size: pairs per item.
        rollout_steps: most random actions applied to a start before it is scored (0 = true latents only).
        num_batches: items (batches) in the dataset.
        seed: base seed.
        near_fraction: share of pairs whose goal is the start moved by a random walk of up to
            ``near_steps`` actions (half of them forward) instead of a uniform state of the layout: in a
            large layout uniform pairs are mostly far apart, and a planner needs the short range too.
        near_steps: longest such walk.
    """

    def __init__(
        self,
        latents: torch.Tensor,
        next_state: np.ndarray,
        distances: list[np.ndarray],
        offsets: np.ndarray,
        layouts: np.ndarray,
        batch_size: int,
        rollout_steps: int,
        num_batches: int,
        seed: int,
        near_fraction: float = 0.0,
        near_steps: int = 16,
    ) -> None:
        if not 0.0 <= near_fraction <= 1.0 or near_steps < 1:
            raise ValueError(f"need 0 <= near_fraction <= 1 and near_steps >= 1, got {near_fraction}, {near_steps}")
        self.near_fraction, self.near_steps = near_fraction, near_steps
        self.latents = latents
        self.next_state = torch.as_tensor(next_state)
        self.offsets = torch.as_tensor(offsets)
        sizes = self.offsets[1:] - self.offsets[:-1]
        largest = int(sizes.max())
        self.table = torch.full((len(distances), largest, largest), UNREACHABLE, dtype=torch.uint8)
        for i, d in enumerate(distances):
            self.table[i, : len(d), : len(d)] = torch.as_tensor(d)
        self.sizes = sizes
        self.layouts = torch.as_tensor(layouts)
        self.batch_size, self.rollout_steps = batch_size, rollout_steps
        self.num_batches, self.seed = num_batches, seed

    def __len__(self) -> int:
        return self.num_batches

    def _follow(self, state: torch.Tensor, moves: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """Global states after the first ``used[i]`` of ``moves[i]`` (``(B, T)`` move ids) from ``state``."""
        for t in range(moves.shape[1]):
            state = torch.where(t < used, self.next_state[state, moves[:, t]], state)
        return state

    def _walk(self, start: torch.Tensor, lay: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Layout-local state after a random walk of up to ``near_steps`` actions from ``start``."""
        b, n = len(start), self.near_steps
        moves = torch.where(torch.rand(b, n, generator=g) < 0.5, 2, torch.randint(2, (b, n), generator=g))
        length = torch.randint(n + 1, (b,), generator=g)
        return self._follow(self.offsets[lay] + start, moves, length) - self.offsets[lay]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        b, steps = self.batch_size, self.rollout_steps
        lay = self.layouts[torch.randint(len(self.layouts), (b,), generator=g)]
        size = self.sizes[lay]
        start = (torch.rand(b, generator=g) * size).long()
        goal = (torch.rand(b, generator=g) * size).long()
        actions = torch.randint(MOVES, (b, max(steps, 1)), generator=g)
        used = torch.randint(steps + 1, (b,), generator=g)  # how many of them happen before scoring
        state = self._follow(self.offsets[lay] + start, actions[:, :steps], used)
        if self.near_fraction > 0:  # (no extra draws otherwise: the same batches as before the option)
            goal = torch.where(torch.rand(b, generator=g) < self.near_fraction, self._walk(start, lay, g), goal)
        distance = self.table[lay, state - self.offsets[lay], goal].long()
        return {
            "start": self.latents[self.offsets[lay] + start],
            "goal": self.latents[self.offsets[lay] + goal],
            "actions": actions,
            "used": used,
            "distance": distance,
        }


class PoseDistanceDataModule(pl.LightningDataModule):
    """Renders every agent state of seeded layouts, encodes them with the model's frozen encoder
    (``pose_source()``), and serves :class:`PosePairs` batches; validation layouts are held out.

    Args:
        level: BabyAI level.
        train_layouts: Layouts to train on (seeds ``seed ..``).
        val_layouts: Held-out layouts (the seeds after).
        seed: First layout seed (the released heads used 3,000,000; never one of the evaluation seeds,
            :data:`~thinkjepa.envs.seeds.BABYAI_EVAL_SEEDS`).
        batch_size: Pairs per step.
        val_batches: Validation batches.
        encode_batch_size: Frames per encoder call.
        near_fraction: Share of pairs with a goal a short random walk away (see :class:`PosePairs`).
        near_steps: Longest such walk.
    """

    def __init__(
        self,
        level: str = "BabyAI-GoToLocal-v0",
        train_layouts: int = 1400,
        val_layouts: int = 100,
        seed: int = 3_000_000,
        batch_size: int = 1024,
        val_batches: int = 4,
        encode_batch_size: int = 256,
        near_fraction: float = 0.0,
        near_steps: int = 16,
    ) -> None:
        super().__init__()
        if train_layouts < 1 or val_layouts < 1:
            raise ValueError(f"need at least one training and one validation layout, got {train_layouts}, {val_layouts}")
        check_training_seeds(seed, train_layouts + val_layouts, f"the goal-distance layouts of {level}")
        self.save_hyperparameters()
        self.level, self.seed = level, seed
        self.train_layouts, self.val_layouts = train_layouts, val_layouts
        self.batch_size, self.val_batches = batch_size, val_batches
        self.encode_batch_size = encode_batch_size
        self.near_fraction, self.near_steps = near_fraction, near_steps
        self.data = None
        self.latents: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.latents is not None:
            return
        module = self.trainer.lightning_module
        encode, image_size = module.pose_source()
        seeds = list(range(self.seed, self.seed + self.train_layouts + self.val_layouts))
        self.data = pose_frames(self.level, seeds, image_size, with_distances=True)
        self.latents = torch.from_numpy(encode_fixed_batches(encode, [self.data.frames], self.encode_batch_size))

    def _pairs(self, layouts: np.ndarray, num_batches: int, seed: int) -> PosePairs:
        model = self.trainer.lightning_module
        return PosePairs(self.latents, self.data.next_state, self.data.distances, self.data.offsets, layouts,
                         self.batch_size, model.rollout_steps, num_batches, seed, self.near_fraction, self.near_steps)

    def train_dataloader(self) -> DataLoader:
        # One epoch of distinct batches covers the run (a resumed run draws its batches afresh).
        steps = int(self.trainer.max_steps) if self.trainer.max_steps > 0 else 1_000_000
        return DataLoader(self._pairs(np.arange(self.train_layouts), steps, self.seed), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        held_out = np.arange(self.train_layouts, self.train_layouts + self.val_layouts)
        return DataLoader(self._pairs(held_out, self.val_batches, self.seed + 1), batch_size=None)


class DistanceModule(pl.LightningModule):
    """Stage 3: fits a :class:`GoalDistance` head on a frozen world model's latent space.

    Args:
        world_model: The world model (a ``JEPA``, or its export directory or ``.ckpt``; usually stage 2's).
        distance: Head architecture.
        rollout_steps: Most random actions the predictor rolls a start forward before it is scored.
        optim: Optimizer and schedule.
    """

    def __init__(
        self,
        world_model: str | JEPA,
        distance: DistanceConfig = DistanceConfig(),
        rollout_steps: int = 6,
        optim: OptimConfig = OptimConfig(),
    ) -> None:
        super().__init__()
        if rollout_steps < 0:
            raise ValueError(f"rollout_steps must be >= 0, got {rollout_steps}")
        model, source = world_model_part(world_model)
        config = as_dataclass(DistanceConfig, distance)
        model.distance = GoalDistance(config, model.latent_dim)
        self.model = model
        self.rollout_steps = rollout_steps
        self.optim = as_dataclass(OptimConfig, optim)
        self.save_hyperparameters({
            "world_model": source,
            "encoder": asdict(model.encoder.config), "predictor": asdict(model.predictor.config),
            "distance": asdict(config), "rollout_steps": rollout_steps, "optim": asdict(self.optim),
        })

    def pose_source(self) -> tuple[Encode, int]:
        """How :class:`PoseDistanceDataModule` encodes frames (the planner's goal encoder) and at what size.

        Not ``latent_source``: that is :class:`~thinkjepa.train.windows.LatentDataModule`'s contract
        (``(encode, cache key)``), which this module does not serve.
        """
        return self.model.target_encode, self.model.image_size

    def train(self, mode: bool = True) -> DistanceModule:
        super().train(mode)
        for part in (self.model.encoder, self.model.target_encoder, self.model.predictor):
            part.eval()  # frozen
        return self

    def _loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z, used = batch["start"], batch["used"]
        if self.rollout_steps > 0:
            with torch.no_grad():
                traj = self.model.rollout(z, batch["actions"][:, : self.rollout_steps], share_prefixes=False)
                traj = torch.cat([z.unsqueeze(1), traj], dim=1)
                z = traj[torch.arange(len(z), device=z.device), used]
        keep = batch["distance"] < UNREACHABLE
        target = batch["distance"][keep].clamp(max=self.model.distance.config.max_distance)
        logits = self.model.distance.logits(z[keep], batch["goal"][keep])
        expected = logits.softmax(-1) @ self.model.distance.values
        return {
            "loss": F.cross_entropy(logits, target),
            "mae": (expected - target).abs().mean(),
            "mae_far": (expected - target).abs()[target >= 6].mean() if (target >= 6).any() else expected.new_zeros(()),
        }

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._loss(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, on_epoch=False)
        return out["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self._loss(batch)
        self.log_dict({f"val/{k}": v for k, v in out.items()}, on_epoch=True, sync_dist=True, prog_bar=True)

    def configure_optimizers(self) -> dict:
        o = self.optim
        return adamw_warmup_cosine(self.model.distance.parameters(), o.lr, o.weight_decay, o.warmup_steps,
                                   o.min_lr_ratio, self.trainer.estimated_stepping_batches)

    def on_fit_end(self) -> None:
        export_on_fit_end(self, self.model)
