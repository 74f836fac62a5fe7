"""Continuous actions end to end: stored, windowed, learned by the world model, planned over a box, on a point
mass seen from above (tests/pointmass.py) written through the same EpisodeWriter as BabyAI's episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fit_checks import fit_and_check
from pointmass import BOX, episode, write_dataset

from thinkjepa.cli import main
from thinkjepa.data.episodes import EpisodeFileError, EpisodeStore
from thinkjepa.data.records import EpisodeRecord
from thinkjepa.data.windows import WindowDataset
from thinkjepa.data.writer import EpisodeWriter
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.costs import GoalCost
from thinkjepa.planning.spaces import BoxSpace
from thinkjepa.worldmodel import JEPA, EncoderConfig, ObjectiveConfig, PredictorConfig, load_world_model

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("pointmass") / "data")


def test_continuous_actions_round_trip_and_window_as_float_vectors(dataset) -> None:
    store = EpisodeStore(dataset)
    assert store.action_space == "continuous" and store.num_actions == 2
    low, high = store.action_box
    assert low.tolist() == [-1.0, -1.0] and high.tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(store.actions(3), episode(3).actions)
    assert np.isnan(store.per_frame("actions")[store.meta(0).num_steps]).all()  # the episode's last frame
    item = WindowDataset(store, 4, [0])[0]
    assert item["actions"].dtype == torch.float32 and item["actions"].shape == (3, 2)
    torch.testing.assert_close(item["actions"], torch.from_numpy(episode(0).actions[:3]))


def test_an_action_outside_the_box_or_of_the_wrong_dimension_is_refused_naming_it(tmp_path) -> None:
    bad = episode(0)
    bad.actions[2] = [0.0, 1.5]
    with pytest.raises(ValueError, match=r"actions outside the action box \[\[-1.0, -1.0\], \[1.0, 1.0\]\]"), \
            EpisodeWriter(tmp_path / "a", action_box=BOX) as w:
        w.add(bad)
    wide = EpisodeRecord.from_trajectory("PointMass", 0, episode(0).frames, np.zeros((12, 3), np.float32), True)
    with pytest.raises(ValueError, match=r"actions has float32 \(12, 3\), expected float32 \(12, 2\)"), \
            EpisodeWriter(tmp_path / "b", action_box=BOX) as w:
        w.add(wide)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_stored_action_outside_the_box_is_named_on_open(dataset, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    actions = np.load(copy / "actions.npy")
    actions[1] = [3.0, 0.0]
    np.save(copy / "actions.npy", actions)
    with pytest.raises(EpisodeFileError, match=r"actions\.npy: expected NaN exactly on episode ends and actions inside"):
        EpisodeStore(copy)


def tiny(action_space: str = "continuous") -> JEPA:
    torch.manual_seed(0)
    enc = EncoderConfig(image_size=SIZE, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    return JEPA(enc, PredictorConfig(action_space=action_space, num_actions=2 if action_space == "continuous" else 5,
                                     action_embed_dim=8, hidden_dim=32, depth=1))


def test_inverse_dynamics_regresses_continuous_actions_known_answer() -> None:
    """A head that always answers (0, 0): the inverse-dynamics term is the mean squared action."""
    model = tiny()

    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*x.shape[:-1], 2)

    model.inverse_dynamics = Zero()
    frames = torch.from_numpy(episode(0).frames[:3])[None]
    actions = torch.tensor([[[0.5, -1.0], [0.0, 0.25]]])
    out = model.loss(frames, actions, ObjectiveConfig(idm_weight=2.0, reg_weight=0.0, rollout_weight=0.0))
    expected = (0.25 + 1.0 + 0.0 + 0.0625) / 4
    assert out["idm"].item() == pytest.approx(expected) and "idm_acc" not in out
    assert out["loss"].item() == pytest.approx(out["teacher"].item() + 2.0 * expected)


def test_actions_of_the_other_kind_are_refused_naming_both_sides() -> None:
    z = torch.zeros(3, 16)
    with pytest.raises(ValueError, match=r"takes continuous actions \(\.\.\., 2\); got integer action ids"):
        tiny("continuous").rollout(z, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"takes discrete actions .* got float actions \(3, 2\): continuous actions "
                                         r"need a world model with predictor.action_space='continuous'"):
        tiny("discrete").rollout(z, torch.zeros(3, 4, 2))


def fit_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes/wm/babyai-tiny.yaml"), f"--data.init_args.root={data}",
            "--data.init_args.batch_size=8", "--data.init_args.window=3", "--data.init_args.val_window=4",
            "--model.init_args.eval_horizons=[1,2]", "--model.init_args.encoder.image_size=32",
            "--model.init_args.encoder.patch_size=8", "--model.init_args.predictor.num_actions=2",
            f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu", *extra]


def test_a_continuous_world_model_trains_exports_loads_and_plans_over_a_box(dataset, tmp_path) -> None:
    out = tmp_path / "run"
    fit_and_check(fit_args(dataset, out, "--model.init_args.predictor.action_space=continuous",
                           "--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=3"),
                  ema="model.target_encoder.")
    wm = load_world_model(out / "world_model")
    assert wm.continuous and wm.predictor.config.num_actions == 2
    frames = torch.from_numpy(EpisodeStore(dataset).frames(0)[[0, 6]].copy())
    with torch.no_grad():
        z0, goal = wm.encode(frames[:1]), wm.target_encode(frames[1:])
    space = BoxSpace(-1.0, 1.0, dim=2)
    planner = CEMPlanner(horizon=3, num_samples=32, iterations=3, num_elites=4)
    result = planner.plan(z0, GoalCost(goal), wm.rollout, space, generator=torch.Generator().manual_seed(0))
    assert result.actions.shape == (1, 3, 2) and result.actions.dtype == torch.float32
    assert bool(((result.actions >= -1) & (result.actions <= 1)).all())
    with torch.no_grad():
        still = GoalCost(goal)(wm.rollout(z0, torch.zeros(1, 3, 2))[:, None])[0, 0]
    assert result.cost[0] <= still + 1e-6  # at least as good as not moving


def test_continuous_data_with_a_discrete_world_model_is_refused_before_compute(dataset, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"the data's actions are continuous but the model's predictor takes discrete"):
        main(["fit", *fit_args(dataset, tmp_path, "--trainer.max_steps=1")])


def test_stage_two_fits_a_continuous_predictor_on_cached_latents(dataset, tmp_path) -> None:
    stage1 = tiny()
    from thinkjepa.worldmodel import save_world_model

    save_world_model(stage1, tmp_path / "stage1")
    out = tmp_path / "stage2"
    fit_and_check(["--config", str(ROOT / "recipes/predictor/babyai-tiny.yaml"), f"--data.init_args.roots=[{dataset}]",
                   "--data.init_args.batch_size=8", f"--model.init_args.world_model={tmp_path / 'stage1'}",
                   "--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=3",
                   f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
                   f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--trainer.enable_progress_bar=false",
                   "--trainer.enable_model_summary=false"])
    assert load_world_model(out / "world_model").continuous


def test_action_blocks_window_every_kth_frame_with_the_k_actions_between_concatenated(dataset) -> None:
    store = EpisodeStore(dataset)
    blocks = WindowDataset(store, 3, [2], frameskip=4)  # 13 frames: starts 0 .. 4 cover 9 frames each
    assert len(blocks) == 5
    item, raw = blocks[1], episode(2)
    torch.testing.assert_close(item["frames"], torch.from_numpy(raw.frames[[1, 5, 9]]))
    torch.testing.assert_close(item["actions"], torch.from_numpy(raw.actions[1:9].reshape(2, 8)))
    with pytest.raises(ValueError, match=r"frameskip must be >= 1, and 1 for discrete actions; got 2 \(discrete"):
        WindowDataset(SimpleStore(), 3, [0], frameskip=2)


class SimpleStore:
    action_box, action_space = None, "discrete"


def test_a_world_model_learns_action_blocks(dataset, tmp_path) -> None:
    out = tmp_path / "blocks"
    fit_and_check(fit_args(dataset, out, "--model.init_args.predictor.action_space=continuous",
                           "--model.init_args.predictor.num_actions=6", "--data.init_args.frameskip=3",
                           "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2"),
                  ema="model.target_encoder.")
    assert load_world_model(out / "world_model").predictor.config.num_actions == 6  # 3 steps x 2-D


def test_a_planner_space_the_world_model_was_not_trained_on_is_refused_naming_both() -> None:
    from thinkjepa.planning.spaces import DiscreteSpace
    from thinkjepa.policy.mpc import LatentMPC, PlanningCost

    planner, cost = CEMPlanner(horizon=2, num_samples=8, iterations=1, num_elites=2), PlanningCost(distance="latent")
    with pytest.raises(ValueError, match=r"a 2-D box but the world model was trained on 5 discrete actions"):
        LatentMPC(tiny("discrete"), planner, BoxSpace(-1.0, 1.0, dim=2), cost)
    with pytest.raises(ValueError, match=r"5 discrete actions but the world model was trained on 2-D continuous"):
        LatentMPC(tiny("continuous"), planner, DiscreteSpace(5), cost)
    with pytest.raises(ValueError, match=r"a 10-D box but the world model takes 2-D actions"):
        LatentMPC(tiny("continuous"), planner, BoxSpace(-1.0, 1.0, dim=10), cost)
    LatentMPC(tiny("continuous"), planner, BoxSpace(-1.0, 1.0, dim=2), cost)  # the right space is taken
