"""Stage 2: the predictor fit on frozen encoder latents, through the real CLI and the latent cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from fit_checks import fit_and_check

from thinkjepa.checkpoint import safe_torch_load
from thinkjepa.cli import main
from thinkjepa.data.collect import collect
from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.latents import cached_latents, encode_fixed_batches, encode_store
from thinkjepa.data.windows import EpochSampler, FixedOrder, split_episodes
from thinkjepa.train.windows import LatentDataModule
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, load_world_model, save_world_model
from thinkjepa.worldmodel.export import target_encoder_fingerprint

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes/predictor/babyai-tiny.yaml")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """A stage-1 world model export with the tiny recipe's architecture (random weights suffice)."""
    torch.manual_seed(0)
    enc = EncoderConfig(model_name="vit_tiny_patch16_224", image_size=88, patch_size=11, latent_dim=32,
                        embed_dim=48, depth=1, num_heads=3)
    model = JEPA(enc, PredictorConfig(hidden_dim=64, depth=1))
    torch.nn.init.normal_(model.predictor.out[1].weight, std=0.02)  # not the identity map
    return save_world_model(model, tmp_path_factory.mktemp("stage1") / "world_model")


def overrides(data: Path, wm: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"--data.init_args.roots=[{data}]", "--data.init_args.batch_size=16",
        f"--model.init_args.world_model={wm}",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1", *extra,
    ]


def test_stage2_fits_the_predictor_only_exports_and_resumes(babyai_dataset, stage1, tmp_path):
    src = load_world_model(stage1)
    main(["fit", "--config", RECIPE, *overrides(babyai_dataset, stage1, tmp_path, "--trainer.max_steps=40",
                                                 "--trainer.val_check_interval=20", "--trainer.limit_val_batches=2",
                                                 "--trainer.callbacks.init_args.every_n_train_steps=20")])
    out = load_world_model(tmp_path / "world_model")
    src_state, out_state = src.state_dict(), out.state_dict()
    for key, value in src_state.items():
        if key.startswith("target_encoder."):
            torch.testing.assert_close(out_state[key], value, rtol=0, atol=0, msg=key)  # frozen
        if key.startswith("encoder."):  # the exported encoder *is* the target encoder
            torch.testing.assert_close(out_state[key], src_state["target_" + key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(out_state[k], v) for k, v in src_state.items() if k.startswith("predictor."))

    # The cache holds one latent per frame, from the stage-1 target encoder.
    store = EpisodeStore(babyai_dataset)
    cache = np.load(Path(babyai_dataset) / "latents" / f"{target_encoder_fingerprint(src)}.npy")
    assert cache.shape == (sum(store.meta(i).num_frames for i in range(len(store))), src.latent_dim)
    torch.testing.assert_close(torch.from_numpy(cache[: store.meta(0).num_frames]),
                               src.target_encode(torch.from_numpy(np.asarray(store.frames(0)))))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "babyai-tiny-stage2"))
    events.Reload()
    for tag in ("train/teacher", "train/rollout", "val/top1@8", "val/action_top1", "val/loss"):
        assert tag in events.Tags()["scalars"], tag
    teacher = [e.value for e in events.Scalars("train/teacher")]
    assert np.mean(teacher[-5:]) < 0.8 * np.mean(teacher[:5]), teacher  # it learns

    ckpt = tmp_path / "checkpoints/last.ckpt"
    assert load_world_model(ckpt).state_dict().keys() == out_state.keys()  # .ckpt loads as a world model
    resumed = tmp_path / "resumed"
    main(["fit", "--config", RECIPE, *overrides(babyai_dataset, stage1, resumed, "--trainer.max_steps=44",
                                                 "--trainer.limit_val_batches=0"), f"--ckpt_path={ckpt}"])
    assert safe_torch_load(resumed / "checkpoints/last.ckpt")["global_step"] == 44


def test_latent_cache_is_reused_and_rebuilt_when_stale(babyai_dataset, tmp_path):
    store = EpisodeStore(babyai_dataset)
    calls = []

    def encode(frames: torch.Tensor) -> torch.Tensor:
        calls.append(len(frames))
        return frames.float().mean(dim=(1, 2))  # (N, 3): a stand-in encoder

    direct = encode_store(encode, store, batch_size=7)
    assert set(calls) == {7} and direct.shape[1] == 3  # fixed-size batches (the last one padded)
    episodes = (store.frames(i) for i in range(len(store)))  # how the frames were read before streaming
    np.testing.assert_array_equal(direct, encode_fixed_batches(encode, episodes, batch_size=7))
    np.testing.assert_array_equal(cached_latents(encode, store, "batch-7", batch_size=7), direct)
    leftovers = [p.name for p in (Path(babyai_dataset) / "latents").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary file was renamed into place
    np.testing.assert_allclose(direct[: store.meta(0).num_frames],
                               np.asarray(store.frames(0)).astype(np.float32).mean(axis=(1, 2)), rtol=1e-6)
    key = "unit-test-key"
    first = np.array(cached_latents(encode, store, key))
    calls.clear()
    np.testing.assert_array_equal(cached_latents(encode, store, key), first)
    assert calls == []  # served from the cache
    np.save(Path(babyai_dataset) / "latents" / f"{key}.npy", np.zeros((3, 3), np.float32))
    with pytest.warns(UserWarning, match=r"unusable \(shape \(3, 3\)"):
        np.testing.assert_array_equal(cached_latents(encode, store, key), first)
    assert calls  # re-encoded


def mean_pixel(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder: ``(N, 3)`` mean colour of each frame."""
    return frames.float().mean(dim=(1, 2))


def windows_built_in_memory(roots: list[Path], window: int, val_window: int, val_fraction: float, seed: int):
    """``(train, val)`` items as :class:`LatentDataModule` built them before it streamed from memory maps:
    all latents and actions concatenated in memory, one global start per window (the reference)."""
    latents, actions, train, val, offset = [], [], [], [], 0
    for root in roots:
        store = EpisodeStore(root)
        spans = []
        for i in range(len(store)):
            n = store.meta(i).num_frames
            a = np.zeros(n, dtype=np.int64)
            a[:-1] = store.actions(i)
            actions.append(a)
            spans.append((offset, n))
            offset += n
        latents.append(encode_fixed_batches(mean_pixel, (store.frames(i) for i in range(len(store)))))
        tr, va = split_episodes(len(store), val_fraction, seed)
        train += [spans[i] for i in tr]
        val += [spans[i] for i in va]
    z, acts = torch.from_numpy(np.concatenate(latents)), torch.from_numpy(np.concatenate(actions))

    def items(episodes: list[tuple[int, int]], t: int) -> list[dict[str, torch.Tensor]]:
        starts = [first + s for first, n in episodes for s in range(n - t + 1)]
        return [{"latents": z[s : s + t], "actions": acts[s : s + t - 1]} for s in starts]

    return items(train, window), items(val, val_window)


def assert_same_batches(got, expected) -> None:
    got, expected = list(got), list(expected)
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        for key in g:
            assert g[key].dtype == e[key].dtype and torch.equal(g[key], e[key]), key


def test_latent_windows_stream_from_the_caches_and_match_the_in_memory_reference(babyai_dataset, tmp_path):
    second = collect(["BabyAI-GoToLocal-v0"], 6, tmp_path / "second", image_size=88, seed=7)
    roots = [Path(babyai_dataset), Path(second)]
    kwargs = {"window": 3, "val_window": 5, "val_fraction": 0.25, "seed": 1}
    dm = LatentDataModule([str(r) for r in roots], batch_size=4, encode_batch_size=5, **kwargs)
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(latent_source=lambda: (mean_pixel, "ref")))
    dm.setup("fit")
    train, val = windows_built_in_memory(roots, **kwargs)

    # Item for item, then batch for batch through the loaders (same samplers, same seed).
    assert len(dm.train_set) == len(train) and len(dm.val_set) == len(val) > 0
    assert_same_batches((dm.train_set[k] for k in range(len(train))), train)
    assert_same_batches((dm.val_set[k] for k in range(len(val))), val)
    expected = list(torch.utils.data.DataLoader(train, batch_size=4, sampler=EpochSampler(len(train), 1)))
    assert_same_batches(dm.train_dataloader(), expected)
    assert_same_batches(dm.val_dataloader(),
                        torch.utils.data.DataLoader(val, batch_size=4, sampler=FixedOrder(len(val), 1)))
    dm.load_state_dict({"epoch": 0, "batches": 2})  # resume: the interrupted epoch continues at batch 2
    assert_same_batches(dm.train_dataloader(), expected[2:])

    # Nothing was copied into memory: the windows read the latent caches and actions.npy through maps,
    # and a dataset pickles (to spawned workers) by file, not by contents.
    for (latents, actions), root in zip(dm.train_set.parts, roots, strict=True):
        assert isinstance(latents, np.memmap) and Path(latents.filename) == root / "latents" / "ref.npy"
        assert isinstance(actions, np.memmap) and Path(actions.filename) == root / "actions.npy"
    blob = pickle.dumps(dm.train_set)
    assert len(blob) < 2000 + 16 * len(train)
    assert_same_batches((pickle.loads(blob)[k] for k in range(len(train))), train)


def test_latent_data_needs_a_model_that_says_how_to_encode(babyai_dataset, tmp_path):
    dm = LatentDataModule([str(babyai_dataset)])
    with pytest.raises(TypeError, match="needs a model with latent_source"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="at least one dataset"):
        LatentDataModule([])


def test_missing_stage1_world_model_is_named(babyai_dataset, tmp_path):
    # jsonargparse re-raises the constructor's FileNotFoundError as a ValueError; the message is kept.
    with pytest.raises((FileNotFoundError, ValueError), match="no world-model checkpoint at .*nowhere"):
        main(["fit", "--config", RECIPE, *overrides(babyai_dataset, tmp_path / "nowhere", tmp_path,
                                                     "--trainer.max_steps=1")])


@pytest.fixture(scope="module")
def grounded_vlm(tmp_path_factory) -> Path:
    """A tiny grounded VLM export (random read-out) at the datasets' 88 px: a guided predictor's guidance."""
    from thinkjepa.thinker.vlm import TinyVLM
    from thinkjepa.train.grounding import GroundingPretrainModule

    torch.manual_seed(0)
    grounded = GroundingPretrainModule(vlm=TinyVLM(image_size=88, patch_size=11, merge=1))
    return grounded.export(tmp_path_factory.mktemp("vlm") / "vlm")


@pytest.mark.parametrize("recipe", sorted(str(p) for p in (ROOT / "recipes/predictor").glob("*.yaml")))
def test_every_predictor_recipe_runs_fast_dev_run(recipe, babyai_dataset, stage1, grounded_vlm, tmp_path):
    guided = "guidance" in (yaml.safe_load(Path(recipe).read_text())["model"]["init_args"] or {})
    fit_and_check(["--config", recipe, *overrides(babyai_dataset, stage1, tmp_path, "--trainer.fast_dev_run=1"),
                   *([f"--model.init_args.guidance={grounded_vlm}"] if guided else [])])


def test_a_guided_predictor_starts_as_the_unguided_one_trains_its_gates_and_exports_its_vlm(
        babyai_dataset, stage1, grounded_vlm, tmp_path):
    from thinkjepa.thinker.guidance import VLMGuidance, guidance_for
    from thinkjepa.train.predictor import PredictorModule

    plain, guided = PredictorModule(str(stage1)), PredictorModule(str(stage1), guidance=str(grounded_vlm))
    store = EpisodeStore(babyai_dataset)
    i, (start, _) = next((i, span) for i, span in enumerate(store.episode_spans()) if span[1] >= 5)
    z = torch.as_tensor(cached_latents(plain.model.target_encode, store, plain.source_key)[start: start + 5])[None]
    actions = torch.as_tensor(store.per_frame("actions")[start: start + 4])[None]  # (1, 4): inside the episode
    c = VLMGuidance(grounded_vlm)(store.frames(i)[:1], [store.meta(i).mission])
    with torch.no_grad():  # gates closed: the guided predictor's rollout is the unguided one's, exactly
        torch.testing.assert_close(guided.model.rollout(z[:, 0], actions, guidance=c),
                                   plain.model.rollout(z[:, 0], actions), rtol=0, atol=0)

    main(["fit", "--config", RECIPE, *overrides(babyai_dataset, stage1, tmp_path, "--trainer.max_steps=6",
                                                 "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
                                                 f"--model.init_args.guidance={grounded_vlm}")])
    cache = next((Path(babyai_dataset) / "latents").glob("guidance-*.npy"))
    vectors = np.load(cache, mmap_mode="r")
    assert vectors.shape == (store.num_frames, guided.guide.dim) and vectors.dtype == np.float16
    torch.testing.assert_close(torch.as_tensor(np.array(vectors[start], np.float32)), c[0], rtol=1e-2, atol=1e-2)
    out = load_world_model(tmp_path / "world_model")
    assert out.predictor.config.guidance_dim == guided.guide.dim
    gates = [float(film.gate) for film in out.predictor.guidance]
    assert all(g != 0.0 for g in gates), gates  # the gates opened: guidance now changes the forecast
    record = json.loads((tmp_path / "world_model" / "guidance.json").read_text())
    assert record["vlm"] == str(grounded_vlm) and record["source_key"] == guided.guide.source_key
    assert guidance_for(tmp_path / "world_model").dim == guided.guide.dim and guidance_for(stage1) is None
    record["source_key"] = "0" * 16  # another VLM than the one it was trained with
    (tmp_path / "world_model" / "guidance.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not the 0000000000000000 the world model was trained with"):
        guidance_for(tmp_path / "world_model")
