"""World-model windows and the data module's by-episode split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from thinkjepa.data import EpisodeFileError, EpisodeStore, WindowDataset, collect
from thinkjepa.data.windows import window_index
from thinkjepa.train.windows import EpisodeDataModule


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collect(["BabyAI-GoToLocal-v0"], 12, tmp_path_factory.mktemp("w") / "ds", image_size=32, seed=0)


def test_window_dataset_serves_every_start(dataset: Path) -> None:
    store = EpisodeStore(dataset)
    episodes = list(range(len(store)))
    ds = WindowDataset(store, window=4, episodes=episodes)
    assert len(ds) == sum(max(0, store.meta(i).num_frames - 3) for i in episodes)
    item = ds[0]
    assert item["frames"].shape == (4, 32, 32, 3) and item["frames"].dtype == torch.uint8
    assert item["actions"].shape == (3,) and item["actions"].dtype == torch.int64
    first = next(i for i in episodes if store.meta(i).num_frames >= 4)
    assert np.array_equal(item["frames"].numpy(), store.frames(first)[:4])
    assert np.array_equal(item["actions"].numpy(), store.actions(first)[:3])
    assert all((ds[k]["actions"] >= 0).all() for k in range(len(ds)))  # never the -1 episode end
    with pytest.raises(ValueError, match="window"):
        WindowDataset(store, window=1, episodes=episodes)


def test_window_index_is_every_start_in_order() -> None:
    rng = np.random.default_rng(0)
    keys, lengths = rng.permutation(50)[:20], rng.integers(0, 12, size=20)  # some shorter than the window
    for window in (2, 4, 13):
        expected = [(k, s) for k, n in zip(keys, lengths, strict=True) for s in range(n - window + 1)]
        got = window_index(keys, lengths, window)
        assert got.dtype == np.int64 and got.shape == (len(expected), 2)
        assert got.tolist() == [list(e) for e in expected]


def test_datamodule_splits_by_episode(dataset: Path) -> None:
    dm = EpisodeDataModule(str(dataset), window=3, val_window=5, batch_size=4, val_fraction=0.25, seed=1)
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.image_size
    dm.setup("fit")
    assert dm.image_size == 32 and dm.num_actions == 7
    assert len(dm.val_episodes) == 3 and not set(dm.train_episodes) & set(dm.val_episodes)
    assert sorted(dm.train_episodes + dm.val_episodes) == list(range(12))
    again = EpisodeDataModule(str(dataset), val_fraction=0.25, seed=1)
    again.setup("fit")
    assert again.val_episodes == dm.val_episodes
    train, val = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    assert train["frames"].shape == (4, 3, 32, 32, 3) and train["actions"].shape == (4, 2)
    assert val["frames"].shape[1:] == (5, 32, 32, 3) and val["actions"].shape[1:] == (4,)
    assert {e for e, _ in dm.val_set._index.tolist()} <= set(dm.val_episodes)


def test_windows_longer_than_every_episode_are_named(dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"no training episode has 500 frames"):
        EpisodeDataModule(str(dataset), window=500, val_fraction=0.25).setup("fit")
    with pytest.warns(UserWarning, match=r"no validation episode has 500 frames"):
        EpisodeDataModule(str(dataset), window=2, val_window=500, val_fraction=0.25).setup("fit")


def test_setup_names_the_bad_file(tmp_path: Path) -> None:
    with pytest.raises(EpisodeFileError, match="episodes.json"):
        EpisodeDataModule(str(tmp_path / "nowhere")).setup("fit")
