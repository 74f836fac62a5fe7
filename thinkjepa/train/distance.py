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
predicted latents a planner scores. Where states cannot be enumerated (continuous control), the pairs
come from recorded episodes instead (:class:`TrajectoryDistanceDataModule`): the label is the number of
steps the recording took between the two frames. The head is exported with the world model; planners use it when
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
from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.latents import Encode, encode_fixed_batches, encode_store
from thinkjepa.data.poses import MOVES, UNREACHABLE, pose_frames
from thinkjepa.data.windows import split_episodes
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


class _PairsDataModule(pl.LightningDataModule):
    """What the goal-distance data modules share: latents encoded once in :meth:`setup` (by :meth:`_load`),
    then batches of pairs (:meth:`_pairs`) drawn from the training items (layouts, episodes or placed states)
    for the whole run, and a few fixed batches from the held-out ones."""

    seed: int
    val_batches: int
    train_items: np.ndarray
    val_items: np.ndarray
    latents: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.latents is None:
            self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def _pairs(self, items: np.ndarray, num_batches: int, seed: int) -> Dataset:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        # One epoch of distinct batches covers the run (a resumed run draws its batches afresh).
        steps = int(self.trainer.max_steps) if self.trainer.max_steps > 0 else 1_000_000
        return DataLoader(self._pairs(self.train_items, steps, self.seed), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._pairs(self.val_items, self.val_batches, self.seed + 1), batch_size=None)


class PoseDistanceDataModule(_PairsDataModule):
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
        self.train_items = np.arange(train_layouts)
        self.val_items = np.arange(train_layouts, train_layouts + val_layouts)

    def _load(self) -> None:
        module = self.trainer.lightning_module
        encode, image_size = module.pose_source()
        seeds = list(range(self.seed, self.seed + self.train_layouts + self.val_layouts))
        self.data = pose_frames(self.level, seeds, image_size, with_distances=True)
        self.latents = torch.from_numpy(encode_fixed_batches(encode, [self.data.frames], self.encode_batch_size))

    def _pairs(self, layouts: np.ndarray, num_batches: int, seed: int) -> PosePairs:
        model = self.trainer.lightning_module
        return PosePairs(self.latents, self.data.next_state, self.data.distances, self.data.offsets, layouts,
                         self.batch_size, model.rollout_steps, num_batches, seed, self.near_fraction, self.near_steps)


class TrajectoryPairs(Dataset):
    """Random (start, actions, goal, distance) pairs along recorded episodes; item ``k`` is one whole batch drawn
    from a generator seeded with ``(seed, k)``, so a resumed run sees the same batches.

    The goal is the frame ``d`` predictor steps (``d * frameskip`` stored frames) after the start in the same
    episode and the label is ``d``: a temporal distance, the steps the recorded trajectory took, which is the
    shortest way where the recording went straight there (an expert's) and an upper bound elsewhere. ``d`` is
    drawn uniformly from ``0..max_distance`` (as far as the episode allows), then the start uniformly among the
    frames it fits after, so every distance is as common as every other. The start may be rolled forward by the
    world model through the first ``used <= d`` recorded action blocks; the label is then ``d - used``.

    Args:
        latents: ``(F, D)`` latents of every stored frame, episodes back to back.
        actions: ``(F, A)`` the per-frame actions (rows past an episode's last action are never applied).
        spans: ``(E, 2)`` every episode's first row and number of frames.
        episodes: Which episodes to draw from.
        frameskip: Stored frames per predictor step (the recorded actions between are one block).
        max_distance: Longest distance drawn, in predictor steps.
        batch_size: Pairs per item.
        rollout_steps: Most recorded blocks a start is rolled forward before it is scored (0 = true latents only).
        num_batches: Items (batches) in the dataset.
        seed: Base seed.
    """

    def __init__(self, latents: torch.Tensor, actions: torch.Tensor, spans: np.ndarray, episodes: np.ndarray,
                 frameskip: int, max_distance: int, batch_size: int, rollout_steps: int, num_batches: int,
                 seed: int) -> None:
        if frameskip < 1 or max_distance < 1:
            raise ValueError(f"need frameskip >= 1 and max_distance >= 1, got {frameskip}, {max_distance}")
        spans = torch.as_tensor(spans)[torch.as_tensor(episodes)]
        if not len(spans) or int(spans[:, 1].max()) <= frameskip:
            raise ValueError(f"no episode has more than {frameskip} frames (one predictor step): nothing to pair")
        self.latents, self.actions = latents, actions
        self.first, self.length = spans[:, 0], spans[:, 1]
        self.frameskip, self.max_distance = frameskip, max_distance
        self.batch_size, self.rollout_steps = batch_size, rollout_steps
        self.num_batches, self.seed = num_batches, seed

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        b, skip, steps = self.batch_size, self.frameskip, self.rollout_steps
        episode = torch.randint(len(self.first), (b,), generator=g)
        first, length = self.first[episode], self.length[episode]
        longest = ((length - 1) // skip).clamp(max=self.max_distance)  # farthest pair this episode holds
        distance = (torch.rand(b, generator=g) * (longest + 1)).long()
        start = first + (torch.rand(b, generator=g) * (length - distance * skip)).long()
        used = torch.minimum((torch.rand(b, generator=g) * (steps + 1)).long(), distance)
        rows = start[:, None] + torch.arange(max(steps, 1) * skip)  # the recorded actions from the start on
        rows = torch.minimum(rows, (first + length - 2)[:, None])  # past the episode: never applied (t >= used)
        return {
            "start": self.latents[start],
            "goal": self.latents[start + distance * skip],
            "actions": self.actions[rows].reshape(b, max(steps, 1), -1),
            "used": used,
            "distance": distance - used,
        }


class TrajectoryDistanceDataModule(_PairsDataModule):
    """Goal-distance pairs along the episodes of a dataset (:class:`TrajectoryPairs`), for environments whose
    states cannot be enumerated and path-searched the way BabyAI's layouts are (continuous control:
    stable-worldmodel's TwoRoom). Every frame is encoded once with the model's frozen target encoder
    (``pose_source()``); validation pairs come from held-out episodes.

    Args:
        root: Dataset directory (:mod:`thinkjepa.data.episodes`), at the world model's image size.
        frameskip: Stored frames per predictor step: the world model's action block (its ``num_actions`` is
            ``frameskip`` times the dataset's action dimension).
        batch_size: Pairs per step.
        val_fraction: Share of episodes held out.
        val_batches: Validation batches.
        seed: Seed of the episode split and of the pairs.
        encode_batch_size: Frames per encoder call.
    """

    def __init__(self, root: str, frameskip: int = 1, batch_size: int = 1024, val_fraction: float = 0.1,
                 val_batches: int = 4, seed: int = 0, encode_batch_size: int = 256) -> None:
        super().__init__()
        if frameskip < 1:
            raise ValueError(f"frameskip must be >= 1, got {frameskip}")
        self.save_hyperparameters()
        self.root, self.frameskip, self.batch_size = root, frameskip, batch_size
        self.val_fraction, self.val_batches, self.seed = val_fraction, val_batches, seed
        self.encode_batch_size = encode_batch_size
        self.latents: torch.Tensor | None = None

    def _load(self) -> None:
        store = EpisodeStore(self.root)
        module = self.trainer.lightning_module
        encode, image_size = module.pose_source()
        if store.image_size != image_size:
            raise ValueError(f"{self.root} holds {store.image_size} px frames but the world model encodes {image_size} px")
        model = module.model
        width = self.frameskip * store.num_actions
        if store.action_box is not None and model.num_actions != width:
            raise ValueError(f"the world model takes {model.num_actions}-D actions but {self.root}'s "
                             f"{store.num_actions}-D actions in blocks of frameskip={self.frameskip} are {width}-D")
        if store.action_box is None and self.frameskip != 1:
            raise ValueError(f"{self.root} holds discrete actions: frameskip must be 1, got {self.frameskip}")
        actions = np.array(store.per_frame("actions"))  # a copy: the map is read-only
        self.actions = torch.as_tensor(actions.reshape(len(actions), -1) if store.action_box is not None else actions)
        self.spans = store.episode_spans()
        train, val = split_episodes(len(store), self.val_fraction, self.seed)
        self.train_items, self.val_items = np.asarray(train), np.asarray(val)
        if not len(self.val_items):
            raise ValueError(f"{self.root}: val_fraction={self.val_fraction} holds out no episode ({len(store)} in all)")
        self.latents = torch.from_numpy(encode_store(encode, store, self.encode_batch_size))

    def _pairs(self, episodes: np.ndarray, num_batches: int, seed: int) -> TrajectoryPairs:
        model = self.trainer.lightning_module
        return TrajectoryPairs(self.latents, self.actions, self.spans, episodes, self.frameskip,
                               model.model.distance.config.max_distance, self.batch_size, model.rollout_steps,
                               num_batches, seed)


class PlacedPairs(Dataset):
    """Random (start, actions, goal, distance) pairs over agent states placed in a continuous environment; item ``k``
    is one whole batch drawn from a generator seeded with ``(seed, k)``.

    Each start may be rolled forward by the world model through the first ``used`` blocks of the random walk the
    simulator took from it; the label is the environment's shortest way from where that walk really led to the
    goal, in blocks (``path_blocks(from, to) -> (B,)``, rounded). With probability ``near_fraction`` the goal is
    drawn among the states within ``near`` (simulator units) of the start instead of uniformly.

    Args:
        latents: ``(N, D)`` latents of the placed states.
        positions: ``(N, R + 1, 2)`` each start and where each block of its walk led.
        actions: ``(N, R, A)`` the walks' action blocks.
        states: Which placed states to draw from (starts and goals alike).
        path_blocks: The shortest way between positions, in blocks.
        batch_size: Pairs per item.
        rollout_steps: Most blocks a start is rolled forward before it is scored (<= R).
        num_batches: Items (batches) in the dataset.
        seed: Base seed.
        near_fraction: Share of pairs with a near goal.
        near: Radius of a near goal.
    """

    def __init__(self, latents: torch.Tensor, positions: torch.Tensor, actions: torch.Tensor, states: np.ndarray,
                 path_blocks, batch_size: int, rollout_steps: int, num_batches: int, seed: int,
                 near_fraction: float = 0.5, near: float = 60.0) -> None:
        if rollout_steps > actions.shape[1]:
            raise ValueError(f"rollout_steps={rollout_steps} but the placed states walked {actions.shape[1]} blocks")
        if not 0.0 <= near_fraction <= 1.0 or not near > 0:
            raise ValueError(f"need 0 <= near_fraction <= 1 and near > 0, got {near_fraction}, {near}")
        self.states = torch.as_tensor(states)
        self.latents, self.positions, self.actions = latents, positions, actions
        self.path_blocks = path_blocks
        self.batch_size, self.rollout_steps, self.num_batches, self.seed = batch_size, rollout_steps, num_batches, seed
        self.near_fraction = near_fraction
        start = positions[self.states, 0]
        self.close = torch.cdist(start, start) <= near  # (S, S) which states are near which

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        b, n = self.batch_size, len(self.states)
        start = torch.randint(n, (b,), generator=g)
        goal = torch.randint(n, (b,), generator=g)
        near = torch.multinomial(self.close[start].float(), 1, generator=g)[:, 0]
        goal = torch.where(torch.rand(b, generator=g) < self.near_fraction, near, goal)
        used = torch.randint(self.rollout_steps + 1, (b,), generator=g)
        i, j = self.states[start], self.states[goal]
        reached = self.positions[i, used]
        distance = torch.as_tensor(np.rint(self.path_blocks(reached.numpy(), self.positions[j, 0].numpy())))
        return {
            "start": self.latents[i],
            "goal": self.latents[j],
            "actions": self.actions[i, : max(self.rollout_steps, 1)],
            "used": used,
            "distance": distance.long(),
        }


class TwoRoomDistanceDataModule(_PairsDataModule):
    """Goal-distance pairs of stable-worldmodel's TwoRoom labelled by the simulator, as BabyAI's are by its layouts
    (:class:`PoseDistanceDataModule`): agent states placed uniformly over both rooms are rendered and encoded with
    the model's frozen target encoder, each walked a few random action blocks in the simulator, and every pair is
    labelled with the environment's shortest way in blocks (straight within a room, through the door between
    them; :func:`~thinkjepa.envs.swm.tworoom_path_length`). Privileged supervision for the cost only: the agent
    plans from pixels. Held-out states validate.

    Args:
        states: States placed (rendered and encoded once).
        frameskip: Environment steps per block (the world model's action block).
        seed: Reset seed of the placements (outside :data:`~thinkjepa.envs.seeds.SWM_EVAL_SEEDS`).
        val_fraction: Share of the states held out.
        batch_size: Pairs per step.
        val_batches: Validation batches.
        near_fraction: Share of pairs whose goal lies within ``near`` simulator pixels of the start.
        near: Radius of a near goal (pixels; the agent moves 5 a step).
        encode_batch_size: Frames per encoder call.
    """

    def __init__(self, states: int = 6000, frameskip: int = 5, seed: int = 100_000, val_fraction: float = 0.1,
                 batch_size: int = 1024, val_batches: int = 4, near_fraction: float = 0.5, near: float = 60.0,
                 encode_batch_size: int = 256) -> None:
        super().__init__()
        if states < 2 or not 0.0 < val_fraction < 1.0:
            raise ValueError(f"need states >= 2 and 0 < val_fraction < 1, got {states}, {val_fraction}")
        self.save_hyperparameters()
        self.num_states, self.frameskip, self.seed, self.val_fraction = states, frameskip, seed, val_fraction
        self.batch_size, self.val_batches = batch_size, val_batches
        self.near_fraction, self.near, self.encode_batch_size = near_fraction, near, encode_batch_size
        self.latents: torch.Tensor | None = None

    def _load(self) -> None:
        from thinkjepa.envs.swm import make_swm_env, tworoom_path_length, tworoom_states

        module = self.trainer.lightning_module
        encode, image_size = module.pose_source()
        placed = tworoom_states(self.num_states, module.rollout_steps, self.frameskip, image_size, self.seed)
        if module.model.num_actions != placed.actions.shape[-1]:
            raise ValueError(f"the world model takes {module.model.num_actions}-D actions, TwoRoom's blocks of "
                             f"frameskip={self.frameskip} are {placed.actions.shape[-1]}-D")
        env = make_swm_env("swm/TwoRoom-v1")
        env.reset(seed=self.seed)
        per_block = float(env.unwrapped.variation_space["agent"]["speed"].value.item()) * self.frameskip

        def path_blocks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return tworoom_path_length(env, a, b) / per_block

        self.path_blocks = path_blocks
        self.positions, self.actions = torch.from_numpy(placed.positions), torch.from_numpy(placed.actions)
        self.latents = torch.from_numpy(encode_fixed_batches(encode, [placed.frames], self.encode_batch_size))
        order = np.random.default_rng(self.seed).permutation(self.num_states)
        held = max(1, round(self.val_fraction * self.num_states))
        self.val_items, self.train_items = np.sort(order[:held]), np.sort(order[held:])

    def _pairs(self, states: np.ndarray, num_batches: int, seed: int) -> PlacedPairs:
        return PlacedPairs(self.latents, self.positions, self.actions, states, self.path_blocks, self.batch_size,
                           self.trainer.lightning_module.rollout_steps, num_batches, seed, self.near_fraction, self.near)


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
