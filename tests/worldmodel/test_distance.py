"""Stage 3, the goal-distance head: its labels, its training through the CLI, its export, and the
planning cost that uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pointmass import write_dataset

from thinkjepa.cli import main
from thinkjepa.data.poses import pose_frames
from thinkjepa.planning.costs import GoalCost
from thinkjepa.policy.mpc import PlanningCost
from thinkjepa.train.distance import DistanceConfig, GoalDistance, PosePairs, TrajectoryPairs
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, load_world_model, save_world_model
from thinkjepa.worldmodel.export import fingerprint

ROOT = Path(__file__).resolve().parents[2]
LEVEL = "BabyAI-GoToLocal-v0"


def tiny_model(image_size: int = 32) -> JEPA:
    torch.manual_seed(0)
    enc = EncoderConfig(image_size=image_size, patch_size=image_size // 4, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    return JEPA(enc, PredictorConfig(num_actions=7, action_embed_dim=8, hidden_dim=32, depth=1))


def continuous_model(frameskip: int) -> JEPA:
    """A tiny world model of 2-D actions in blocks of ``frameskip`` (32 px frames)."""
    torch.manual_seed(0)
    enc = EncoderConfig(image_size=32, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    pred = PredictorConfig(action_space="continuous", num_actions=2 * frameskip, action_embed_dim=8, hidden_dim=32, depth=1)
    return JEPA(enc, pred)


def test_pairs_are_labelled_with_the_distance_from_where_the_actions_lead():
    data = pose_frames(LEVEL, [5, 6], image_size=32, with_distances=True)
    latents = torch.arange(len(data.poses), dtype=torch.float32)[:, None]  # latent = state index
    pairs = PosePairs(latents, data.next_state, data.distances, data.offsets, np.arange(2),
                      batch_size=256, rollout_steps=3, num_batches=2, seed=0)
    batch = pairs[1]
    assert set(batch["used"].tolist()) == {0, 1, 2, 3}
    for i in range(256):
        start, goal = int(batch["start"][i, 0]), int(batch["goal"][i, 0])
        lay = int(data.layout[start])
        assert data.layout[goal] == lay  # pairs never cross layouts
        state = start
        for a in batch["actions"][i, : int(batch["used"][i])].tolist():
            state = int(data.next_state[state, a])
        off = int(data.offsets[lay])
        assert int(batch["distance"][i]) == int(data.distances[lay][state - off, goal - off])
    torch.testing.assert_close(pairs[1]["distance"], batch["distance"])  # item k is reproducible
    assert not torch.equal(pairs[0]["start"], batch["start"])


def test_near_goals_are_a_short_walk_away_and_the_default_batches_are_unchanged():
    data = pose_frames(LEVEL, [5, 6], image_size=32, with_distances=True)
    latents = torch.arange(len(data.poses), dtype=torch.float32)[:, None]
    args = (latents, data.next_state, data.distances, data.offsets, np.arange(2))
    uniform = PosePairs(*args, batch_size=512, rollout_steps=0, num_batches=1, seed=0)
    near = PosePairs(*args, batch_size=512, rollout_steps=0, num_batches=1, seed=0, near_fraction=1.0, near_steps=4)
    d_uniform, d_near = uniform[0]["distance"].float(), near[0]["distance"]
    assert int(d_near.max()) <= 4  # the walk itself is a path of at most 4 actions
    assert d_near.float().mean() < 0.5 * d_uniform.mean()
    assert len(set(d_near.tolist())) >= 4  # a spread of short distances, not only the start itself
    torch.testing.assert_close(PosePairs(*args, batch_size=512, rollout_steps=0, num_batches=1, seed=0,
                                         near_fraction=0.0)[0]["distance"], uniform[0]["distance"])
    with pytest.raises(ValueError, match="near_fraction"):
        PosePairs(*args, batch_size=8, rollout_steps=0, num_batches=1, seed=0, near_fraction=1.5)


def test_trajectory_pairs_are_labelled_with_the_steps_the_recording_took():
    spans = np.array([[0, 11], [11, 26], [37, 3]])  # three episodes: 11, 26 and 3 frames
    rows = torch.arange(40, dtype=torch.float32)
    latents, actions = rows[:, None], torch.stack([rows, -rows], dim=1)  # latent and action = their row
    pairs = TrajectoryPairs(latents, actions, spans, np.array([0, 1, 2]), frameskip=5, max_distance=4,
                            batch_size=512, rollout_steps=2, num_batches=2, seed=0)
    batch = pairs[1]
    assert batch["actions"].shape == (512, 2, 10)  # two blocks of five 2-D actions
    seen = set()
    for i in range(512):
        start, goal, used = int(batch["start"][i, 0]), int(batch["goal"][i, 0]), int(batch["used"][i])
        episode = int(np.searchsorted(spans[:, 0], start, side="right")) - 1
        first, length = spans[episode]
        assert first <= start <= goal < first + length  # pairs never cross episodes
        steps = (goal - start) // 5
        assert goal - start == 5 * steps and 0 <= used <= min(steps, 2)
        assert int(batch["distance"][i]) == steps - used  # the blocks left after the rolled-forward ones
        for t in range(used):  # the recorded actions of the blocks rolled through, in order
            assert batch["actions"][i, t, 0::2].tolist() == list(range(start + 5 * t, start + 5 * t + 5))
        seen.add((episode, steps))
    assert {s for e, s in seen if e == 1} == {0, 1, 2, 3, 4}  # capped at max_distance
    assert {s for e, s in seen if e == 0} == {0, 1, 2} and {s for e, s in seen if e == 2} == {0}
    torch.testing.assert_close(pairs[1]["distance"], batch["distance"])  # item k is reproducible
    with pytest.raises(ValueError, match="no episode has more than 5 frames"):
        TrajectoryPairs(latents, actions, spans, np.array([2]), 5, 4, 8, 2, 1, 0)


def test_a_head_trains_on_recorded_episodes_of_continuous_control(tmp_path):
    import lightning.pytorch as pl

    from thinkjepa.train.distance import DistanceModule, TrajectoryDistanceDataModule

    root = write_dataset(tmp_path / "data", episodes=8, steps=15)
    module = DistanceModule(continuous_model(5), DistanceConfig(hidden_dim=16, depth=1, max_distance=3), rollout_steps=2)
    data = TrajectoryDistanceDataModule(str(root), frameskip=5, batch_size=64, val_fraction=0.25, val_batches=1)
    trainer = pl.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, val_check_interval=10, check_val_every_n_epoch=None,
                         default_root_dir=tmp_path)
    before = [p.detach().clone() for p in module.model.distance.parameters()]
    trainer.fit(module, data)
    assert len(data.val_items) == 2 and data.latents.shape == (8 * 16, 16)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.distance.parameters(), strict=True))
    assert torch.isfinite(trainer.callback_metrics["val/mae"])
    wrong = TrajectoryDistanceDataModule(str(root), frameskip=4)  # blocks of 4 do not make the model's 10-D actions
    wrong.trainer = trainer
    with pytest.raises(ValueError, match="10-D actions"):
        wrong.setup()


def test_a_head_trains_on_tworoom_states_the_simulator_labels(tmp_path):
    pytest.importorskip("stable_worldmodel", reason="the swm extra is not installed (make install-swm)")
    import lightning.pytorch as pl

    from thinkjepa.train.distance import DistanceModule, TwoRoomDistanceDataModule

    module = DistanceModule(continuous_model(5), DistanceConfig(hidden_dim=16, depth=1, max_distance=8), rollout_steps=1)
    data = TwoRoomDistanceDataModule(states=20, val_fraction=0.25, batch_size=32, val_batches=1)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, val_check_interval=2, check_val_every_n_epoch=None,
                         default_root_dir=tmp_path)
    before = [p.detach().clone() for p in module.model.distance.parameters()]
    trainer.fit(module, data)
    assert len(data.val_items) == 5 and len(data.train_items) == 15 and data.latents.shape == (20, 16)
    assert not set(data.val_items) & set(data.train_items)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.distance.parameters(), strict=True))
    assert torch.isfinite(trainer.callback_metrics["val/mae"])
    batch = next(iter(data.val_dataloader()))
    assert (batch["distance"] >= 0).all()


def test_a_quantile_of_the_head_is_below_its_mean_for_a_spread_and_k_plus_q_for_a_point_mass_at_k():
    head = GoalDistance(DistanceConfig(hidden_dim=8, depth=1, max_distance=4), latent_dim=2)
    z = torch.zeros(2, 2)
    spread = torch.tensor([[-30.0, 10.0, -30.0, -30.0, 10.0], [-30.0, -30.0, -30.0, 30.0, -30.0]])  # 1 or 4; only 3
    head.logits = lambda z, goal: spread
    torch.testing.assert_close(head(z, z), torch.tensor([2.5, 3.0]))  # the mean counts the long way half the time
    torch.testing.assert_close(head.quantile(z, z, 0.25), torch.tensor([1.5, 3.25]))  # class 1 holds the first half
    low, high = head.quantile(z, z, 0.1), head.quantile(z, z, 0.9)
    assert (low < high).all() and float(high[0]) > 4  # the upper quantile reaches the long way
    with pytest.raises(ValueError, match="0 < q < 1"):
        head.quantile(z, z, 1.0)
    with pytest.raises(ValueError, match="quantile"):
        PlanningCost(quantile=0.0)
    assert PlanningCost(distance="learned", quantile=0.25).metric(type("W", (), {"distance": head})())[0](z, z)[0] > 0


def test_goal_cost_with_a_learned_distance_counts_steps():
    def steps_away(z, g):
        return (z - g).abs().sum(-1)

    goal = torch.zeros(1, 1)
    # two rollouts of 3 steps: one reaches distance 0 at step 3, one gets to distance 1 at step 1
    traj = torch.tensor([[[[2.0], [1.0], [0.0]], [[1.0], [1.0], [1.0]]]])  # (B=1, N=2, H=3, D=1)
    cost = GoalCost(goal, weights="min", metric=steps_away, step_cost=1.0)(traj)
    torch.testing.assert_close(cost, torch.tensor([[3.0, 2.0]]))  # min_h (h + d_h)
    assert GoalCost(goal, weights="min", metric=steps_away, step_cost=1.0).select(0)(traj).shape == (1, 2)


def test_planning_cost_uses_the_head_only_when_there_is_one():
    model = tiny_model()
    assert PlanningCost("auto").metric(model) == ("l2", 1e-3)
    with pytest.raises(ValueError, match="goal-distance head"):
        PlanningCost("learned").metric(model)
    with pytest.raises(ValueError, match="distance must be one of"):
        PlanningCost("manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be one of"):
        PlanningCost(steps="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latent_weight must be >= 0"):
        PlanningCost(latent_weight=-1.0)
    model.distance = GoalDistance(DistanceConfig(hidden_dim=8, depth=1, max_distance=4), model.latent_dim)
    metric, step_cost = PlanningCost("auto", latent_weight=0.5).metric(model)
    assert step_cost == 1.0
    z, g = torch.randn(4, 16), torch.randn(4, 16)
    torch.testing.assert_close(metric(z, g), model.distance(z, g) + 0.5 * (z - g).norm(dim=-1))
    torch.testing.assert_close(PlanningCost("learned", latent_weight=0.0).metric(model)[0](z, g), model.distance(z, g))
    assert PlanningCost("latent").metric(model) == ("l2", 1e-3)


def test_head_is_exported_and_changes_the_fingerprint(tmp_path):
    model = tiny_model()
    plain = fingerprint(model)
    model.distance = GoalDistance(DistanceConfig(hidden_dim=8, depth=1, max_distance=4), model.latent_dim)
    assert fingerprint(model) != plain
    save_world_model(model, tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm")
    z, g = torch.randn(5, 16), torch.randn(5, 16)
    torch.testing.assert_close(loaded.distance(z, g), model.distance.eval()(z, g))
    assert ((loaded.distance(z, g) >= 0) & (loaded.distance(z, g) <= 4)).all()


@pytest.mark.parametrize("recipe", sorted(str(p) for p in (ROOT / "recipes/distance").glob("*.yaml")))
def test_distance_recipe_trains_exports_and_plans(recipe, tmp_path):
    data = yaml.safe_load(Path(recipe).read_text())["data"]
    if "level" in data["init_args"]:  # rendered BabyAI layouts
        save_world_model(tiny_model(88 if data["init_args"]["level"] == "BabyAI-GoTo-v0" else 32), tmp_path / "stage2")
        sizes = ["--data.init_args.train_layouts=3", "--data.init_args.val_layouts=1"]  # (88 px: >= 3 px cells)
    else:  # TwoRoom states placed by the simulator
        pytest.importorskip("stable_worldmodel", reason="the swm extra is not installed (make install-swm)")
        save_world_model(continuous_model(data["init_args"]["frameskip"]), tmp_path / "stage2")
        sizes = ["--data.init_args.states=40"]
    out = tmp_path / "run"
    main(["fit", "--config", recipe, f"--model.init_args.world_model={tmp_path / 'stage2'}",
          "--model.init_args.rollout_steps=2", *sizes,
          "--data.init_args.batch_size=64", "--data.init_args.val_batches=1", "--trainer.max_steps=30",
          "--trainer.val_check_interval=15", f"--trainer.default_root_dir={out}",
          f"--trainer.logger.init_args.save_dir={out}", f"--trainer.callbacks.init_args.dirpath={out}/checkpoints",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    wm = load_world_model(out / "world_model")
    assert wm.distance is not None
    src = load_world_model(tmp_path / "stage2")
    for key, value in src.state_dict().items():  # everything but the head is untouched
        torch.testing.assert_close(wm.state_dict()[key], value, rtol=0, atol=0, msg=key)
    from_ckpt = load_world_model(out / "checkpoints" / "last.ckpt")
    z = torch.randn(3, 16)
    torch.testing.assert_close(from_ckpt.distance(z, z.flip(0)), wm.distance(z, z.flip(0)))
    assert PlanningCost().metric(wm)[0].head is wm.distance


def test_policies_pass_the_cost_choice_to_their_planner():
    from thinkjepa.planning.cem import CEMPlanner
    from thinkjepa.planning.spaces import DiscreteSpace
    from thinkjepa.policy import FlatPolicy

    model = tiny_model()
    model.distance = GoalDistance(DistanceConfig(hidden_dim=8, depth=1, max_distance=4), model.latent_dim)
    planner, space = CEMPlanner(horizon=2, num_samples=4, iterations=1, num_elites=2), DiscreteSpace(7)
    z, g = torch.randn(3, 16), torch.randn(3, 16)
    head_only = FlatPolicy(model, planner, space, PlanningCost(latent_weight=0.0)).mpc
    torch.testing.assert_close(head_only.metric(z, g), model.distance(z, g))
    assert head_only.step_cost == 1.0
    assert FlatPolicy(model, planner, space, PlanningCost("latent")).mpc.metric == "l2"
