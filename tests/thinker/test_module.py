"""ThinkerModule: a tiny fit with a real (tiny, untrained) world model, export, checkpoints and resume."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from thinker_helpers import frames

from thinkjepa.checkpoint import StateDictMismatchError
from thinkjepa.thinker.build import start_from
from thinkjepa.thinker.checkpoint import clean_base_state, load_thinker, save_thinker
from thinkjepa.thinker.head import HeadOptions
from thinkjepa.thinker.vlm import TinyVLM
from thinkjepa.train.thinker import LossOptions, ThinkerModule
from thinkjepa.train.thinker_data import ThinkerDataModule
from thinkjepa.worldmodel import load_world_model

TINY = {"idefics3": ("model.connector",), "qwen2_vl": ("model.visual.merger",)}


def _module(world_model_dir, kind: str = "idefics3", **kwargs) -> ThinkerModule:
    return ThinkerModule(str(world_model_dir), vlm=TinyVLM(kind=kind), trainable=TINY[kind], **kwargs)


def _trainer(root, max_steps: int, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(max_steps=max_steps, default_root_dir=root, **{**options, **kwargs})


@pytest.mark.parametrize("kind", ["idefics3", "qwen2_vl"])
def test_tiny_fit_logs_metrics_and_exports_a_loadable_thinker(
    kind, world_model_dir, dataset_dir, tmp_path
) -> None:
    module = _module(world_model_dir, kind, loss=LossOptions(infonce_weight=0.5))
    dm = ThinkerDataModule(str(dataset_dir), subgoal_source="waypoint", batch_size=4, val_fraction=0.25)
    trainer = _trainer(tmp_path, max_steps=3, val_check_interval=3)
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/infonce", "val/energy", "val/top1", "val/top1_copy", "val/top1_blind"):
        assert torch.isfinite(metrics[key]), key

    wm = load_world_model(world_model_dir)
    thinker = load_thinker(tmp_path / "thinker", wm)
    images, missions = frames(2), ["go to the red ball", "go to a key"]
    module.thinker.eval()
    torch.testing.assert_close(thinker.propose(images, missions), module.thinker.propose(images, missions))


def test_checkpoints_hold_only_trained_weights_and_resume(world_model_dir, dataset_dir, tmp_path) -> None:
    dm = ThinkerDataModule(str(dataset_dir), subgoal_source="bot", batch_size=4)
    module = _module(world_model_dir, head=HeadOptions(pooling="attention"), language_blind=True)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    state = torch.load(tmp_path / "step2.ckpt", weights_only=True)["state_dict"]
    assert set(state) == {n for n, p in module.named_parameters() if p.requires_grad}
    assert all("lora_" in k or "connector" in k or k.startswith("thinker.head.") for k in state)

    resumed = _module(world_model_dir, head=HeadOptions(pooling="attention"), language_blind=True)
    trainer = _trainer(tmp_path / "resumed", max_steps=2, limit_val_batches=0)
    trainer.fit(resumed, dm, ckpt_path=tmp_path / "step2.ckpt")  # restores, then has nothing left to do
    assert trainer.global_step == 2
    images, missions = frames(2), ["open the door"] * 2
    module.thinker.eval(), resumed.thinker.eval()
    assert torch.equal(resumed.thinker.propose(images, missions), module.thinker.propose(images, missions))

    other = _module(world_model_dir, head=HeadOptions(pooling="mean"))  # a different head: refused by name
    with pytest.raises(ValueError, match="pools"):
        _trainer(tmp_path / "other", max_steps=3, limit_val_batches=0).fit(
            other, dm, ckpt_path=tmp_path / "step2.ckpt"
        )


def test_grounding_loss_needs_a_grounded_head(world_model_dir) -> None:
    with pytest.raises(ValueError, match="head.pooling to 'grounded'"):
        _module(world_model_dir, loss=LossOptions(grounding_weight=1.0))
    with pytest.raises(ValueError, match="head.queries"):
        _module(world_model_dir, head=HeadOptions(pooling="grounded"), loss=LossOptions(waypoint_grounding_weight=1.0))


def test_grounding_loss_teaches_the_pool_to_point_at_the_named_object(world_model_dir, dataset_dir, tmp_path) -> None:
    module = _module(world_model_dir, head=HeadOptions(pooling="grounded", queries=2),
                     loss=LossOptions(grounding_weight=1.0, waypoint_grounding_weight=1.0))
    dm = ThinkerDataModule(str(dataset_dir), batch_size=8, grounding_samples=64,
                           grounding_levels=["BabyAI-GoToLocal-v0"])
    dm.setup()
    extra = [k for k in range(len(dm.train_set)) if dm.train_set[k]["target_pixel"][0] >= 0]
    assert len(extra) == 64
    batch = torch.utils.data.default_collate([dm.train_set[k] for k in extra[:8]])
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    assert not torch.equal(batch["target_pixel"], batch["waypoint_pixel"])
    losses = []
    for _ in range(40):  # the grounding terms alone, on one batch: each query must learn its own token
        hidden, inputs = module.thinker.encode(batch["image"], batch["mission"])
        mask = module.thinker.image_mask(inputs)
        scores = module.thinker.head.grounding_scores(hidden, mask)
        terms = [module._grounding_loss(scores[:, query], mask, batch[key], 88)[0]
                 for query, key in enumerate(("target_pixel", "waypoint_pixel"))]
        optimizer.zero_grad()
        sum(terms).backward()
        optimizer.step()
        losses.append([t.item() for t in terms])
    for query in (0, 1):  # untrained: uniform over 16 tokens
        assert losses[0][query] == pytest.approx(torch.log(torch.tensor(16.0)).item(), rel=1e-3)
        assert losses[-1][query] < 0.5 * losses[0][query]

    trainer = _trainer(tmp_path, max_steps=2, val_check_interval=2)
    trainer.fit(module, dm)  # the real training step logs the terms
    for key in ("train/grounding", "train/grounding_top1", "train/waypoint_grounding", "val/top1"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


def test_one_token_per_cell_grounds_on_cells_and_round_trips(world_model_dir, dataset_dir, tmp_path) -> None:
    # 88 px frames, 11 px patches, merge 1: 8 x 8 language-model tokens, one per GoToLocal cell.
    module = ThinkerModule(str(world_model_dir), vlm=TinyVLM(image_size=88, patch_size=11, merge=1),
                           trainable=TINY["idefics3"], head=HeadOptions(pooling="grounded"),
                           loss=LossOptions(grounding_weight=1.0))
    dm = ThinkerDataModule(str(dataset_dir), batch_size=8, grounding_samples=64,
                           grounding_levels=["BabyAI-GoToLocal-v0"])
    dm.setup()
    extra = [k for k in range(len(dm.train_set)) if dm.train_set[k]["target_pixel"][0] >= 0]
    batch = torch.utils.data.default_collate([dm.train_set[k] for k in extra[:8]])
    grid = module.thinker.world_model.image_size // 11  # 8 cells of 11 px
    cells = (batch["target_pixel"] // 11) @ torch.tensor([grid, 1])  # the named object's cell, row-major
    assert torch.equal(module.grounding_labels(batch["target_pixel"], 88), cells)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(30):
        hidden, inputs = module.thinker.encode(batch["image"], batch["mission"])
        mask = module.thinker.image_mask(inputs)
        loss, _ = module._grounding_loss(module.thinker.head.grounding_scores(hidden, mask)[:, 0], mask,
                                         batch["target_pixel"], 88)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(64.0)).item(), rel=1e-3)  # uniform over 64 cells
    assert losses[-1] < 0.5 * losses[0]

    trainer = _trainer(tmp_path, max_steps=1, val_check_interval=1)
    trainer.fit(module, dm)
    thinker = load_thinker(tmp_path / "thinker", load_world_model(world_model_dir))
    images, missions = frames(2), ["go to the red ball", "go to a key"]
    module.thinker.eval()
    torch.testing.assert_close(thinker.propose(images, missions), module.thinker.propose(images, missions))


def test_init_from_copies_a_thinker_trained_elsewhere_and_refuses_another_architecture(world_model_dir, tmp_path) -> None:
    source = _module(world_model_dir, head=HeadOptions(pooling="grounded", queries=2))
    with torch.no_grad():  # make its weights differ from a fresh module's
        for p in source.thinker.parameters():
            p.add_(0.01 * torch.randn_like(p))
    # Trained against another world model: a start point, so its world model is not checked.
    save_thinker(source.thinker, tmp_path / "elsewhere", world_model_fingerprint="another-world-model")

    started = _module(world_model_dir, head=HeadOptions(pooling="grounded", queries=2),
                      init_from=str(tmp_path / "elsewhere"))
    assert started.hparams["init_from"] == str(tmp_path / "elsewhere")
    ours, theirs = started.thinker.state_dict(), source.thinker.state_dict()
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        if not name.startswith("world_model."):
            assert torch.equal(ours[name], value), name
    fresh = _module(world_model_dir, head=HeadOptions(pooling="grounded", queries=2))
    assert not torch.equal(fresh.thinker.head.state_dict()["mlp.0.weight"], ours["head.mlp.0.weight"])
    # What trains is what this run declares, not what the source trained.
    assert [n for n, p in started.named_parameters() if p.requires_grad] == [
        n for n, p in fresh.named_parameters() if p.requires_grad
    ]

    with pytest.raises(StateDictMismatchError, match="head"):
        _module(world_model_dir, head=HeadOptions(pooling="grounded", queries=2, hidden_dim=64),
                init_from=str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="missing"):
        _module(world_model_dir, init_from=str(tmp_path / "missing"))


def test_init_from_a_thinker_with_other_adapters_copies_its_vlm_under_or_into_them(world_model_dir, tmp_path) -> None:
    """A thinker trained without adapters starts a LoRA run as its frozen base (copied before the adapters go
    on, which start fresh); a LoRA thinker starts a run without adapters with its adapters merged in."""
    full = _module(world_model_dir, lora=None)
    with torch.no_grad():
        for p in full.thinker.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_thinker(full.thinker, tmp_path / "full", world_model_fingerprint="another-world-model")
    adapted = _module(world_model_dir, init_from=str(tmp_path / "full"))  # the default LoRA adapters
    base, theirs = clean_base_state(adapted.thinker.base_vlm), full.thinker.vlm.state_dict()
    assert base.keys() == theirs.keys() and all(torch.equal(v, theirs[k]) for k, v in base.items())
    lora_b = [p for n, p in adapted.thinker.named_parameters() if "lora_B" in n]
    assert lora_b and all(not p.any() for p in lora_b)  # fresh: the adapted thinker starts as the source
    assert all(torch.equal(v, full.thinker.head.state_dict()[k]) for k, v in adapted.thinker.head.state_dict().items())
    images, missions = frames(2), ["go to the red ball", "go to a key"]
    full.thinker.eval(), adapted.thinker.eval()
    torch.testing.assert_close(adapted.thinker.propose(images, missions), full.thinker.propose(images, missions))
    with pytest.raises(ValueError, match="trained without LoRA adapters"):  # a base that is not the source's
        start_from(_module(world_model_dir).thinker, str(tmp_path / "full"))

    with torch.no_grad():
        for p in lora_b:
            p.normal_(0, 0.05)
    save_thinker(adapted.thinker, tmp_path / "adapted", world_model_fingerprint="another-world-model")
    merged = _module(world_model_dir, lora=None, init_from=str(tmp_path / "adapted")).thinker.eval()
    torch.testing.assert_close(merged.propose(images, missions), adapted.thinker.propose(images, missions))


class _FixedHead(torch.nn.Module):
    """A head whose z* is given: the training step's arithmetic is then known."""

    residual = False

    def __init__(self, z: torch.Tensor) -> None:
        super().__init__()
        self.z = z

    def forward(self, hidden, attention_mask, z_current, image_mask) -> torch.Tensor:
        return self.z


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\(\)`")
def test_training_step_scores_z_against_the_indexed_subgoal_target_with_energy_and_infonce(world_model_dir) -> None:
    """z* = (0, 0), (3, 0) against the targets of samples 1 and 0, (1, 0) and (3, 4): energy (1 + 16) / 2 = 8.5;
    InfoNCE over d²(z_i, y_j) = [[1, 25], [4, 16]] in units of τ times the mean squared target distance
    (2 · 20 / 4 = 10), i.e. logits −d² / 5."""
    module = _module(world_model_dir, loss=LossOptions(infonce_weight=0.7, temperature=0.5))
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    module.thinker.head = _FixedHead(z)
    module.thinker.encode = lambda images, missions: (None, {"attention_mask": None})
    module.thinker.image_mask = lambda inputs: None
    targets = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # sample 0, sample 1
    module._latents = {"train": {"target": targets, "current": torch.zeros(2, 2)}}
    loss = module.training_step({"index": torch.tensor([1, 0]), "image": frames(2), "mission": ["a", "b"]}, 0)

    def cross_entropy(row: list[float], true: int) -> float:
        return math.log(sum(math.exp(x) for x in row)) - row[true]

    infonce = (cross_entropy([-1 / 5, -25 / 5], 0) + cross_entropy([-4 / 5, -16 / 5], 1)) / 2
    assert loss.item() == pytest.approx(8.5 + 0.7 * infonce, rel=1e-6)
    module.loss_options = LossOptions()  # no InfoNCE: the energy alone
    assert module.training_step({"index": torch.tensor([1, 0]), "image": frames(2), "mission": ["a", "b"]},
                                0).item() == pytest.approx(8.5)
