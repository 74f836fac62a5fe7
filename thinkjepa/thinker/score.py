"""Score an exported thinker on held-out episodes, level by level (``thinkjepa score-thinker``).

Training validates on the recipe's ``val_levels`` only (GoTo for the tiny recipe). This scores a saved
thinker on the held-out episodes of any level of a dataset — the same episode split as
:class:`~thinkjepa.train.thinker_data.ThinkerDataModule` with the same ``val_fraction`` and ``seed`` — with
the training run's metrics (:class:`~thinkjepa.thinker.metrics.SubgoalMetrics`: the thinker, the
copy-the-current-latent baseline and the thinker with a neutral instruction).

``thinkjepa score-thinker --thinker checkpoints/thinker/babyai-tiny/thinker --world_model checkpoints/wm/babyai-tiny-stage2/world_model``
"""

from __future__ import annotations

import json

import torch

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.latents import encode_fixed_batches, stacked
from thinkjepa.thinker.checkpoint import load_thinker
from thinkjepa.thinker.data import SubgoalDataset, SubgoalSource, split_episodes
from thinkjepa.thinker.metrics import SubgoalMetrics, episode_bootstrap_difference, retrieval_hits
from thinkjepa.worldmodel.export import load_world_model


@torch.no_grad()
def score_thinker(
    thinker: str,
    world_model: str,
    data: str = "data/babyai-tiny",
    levels: list[str] | None = None,
    subgoal_source: SubgoalSource = "waypoint",
    val_fraction: float = 0.1,
    seed: int = 0,
    fallback_k: int = 4,
    neutral_instruction: str = "go to the object",
    batch_size: int = 64,
    out: str | None = None,
) -> dict[str, dict[str, float]]:
    """Held-out metrics of a saved thinker, per level.

    Args:
        thinker: Exported thinker directory.
        world_model: The world model it was trained against (checked against the recorded fingerprint).
        data: Episode dataset directory.
        levels: Levels to score (``None``: every level with held-out episodes).
        subgoal_source: ``waypoint`` or ``bot`` subgoals (as in training).
        val_fraction: Held-out share of each level's episodes (as in training).
        seed: Seed of the episode split (as in training).
        fallback_k: Steps ahead of the target where the subgoal source does not apply (as in training).
        neutral_instruction: The mission of the language-blind query.
        batch_size: Frames per thinker / encoder call.
        out: Also write the results to this JSON file.

    Returns:
        ``{level: {samples, episodes, mse, mse_copy, mse_blind, cosine, beats_copy, top1, top1_copy, top1_blind,
        top1_minus_blind, top1_minus_blind_ci95, top1_minus_copy, top1_minus_copy_ci95}}``: the margins are
        paired differences of top-1 on the same frames, their 95 % intervals from resampling whole episodes.
    """
    wm = load_world_model(world_model).eval()
    model = load_thinker(thinker, world_model=wm).eval()
    store = EpisodeStore(data)
    _, held_out = split_episodes([store.meta(i).level for i in range(len(store))], val_fraction, seed)  # the run's split
    by_level: dict[str, list[int]] = {}
    for e in held_out:
        by_level.setdefault(store.meta(e).level, []).append(e)
    unknown = sorted(set(levels or ()) - set(by_level))
    if unknown:
        raise ValueError(
            f"levels {unknown} have no held-out episodes in {data} (its held-out levels: {sorted(by_level)})"
        )
    encode = wm.target_encode
    results: dict[str, dict[str, float]] = {}
    for level in levels or sorted(by_level):
        ds = SubgoalDataset(store, by_level[level], subgoal_source, fallback_k)
        keys = list(range(len(ds)))
        current = torch.from_numpy(
            encode_fixed_batches(encode, stacked(ds.current_image, keys, batch_size), batch_size)
        )
        target = torch.from_numpy(
            encode_fixed_batches(encode, stacked(ds.subgoal_image, keys, batch_size), batch_size)
        )
        candidates = {
            e: torch.from_numpy(encode_fixed_batches(encode, [ds.candidate_images(e)], batch_size))
            for e in ds.episodes
        }
        metrics = SubgoalMetrics()
        hits: dict[str, list[torch.Tensor]] = {"thinker": [], "blind": [], "copy": []}
        for start in range(0, len(keys), batch_size):
            b = keys[start : start + batch_size]
            images = torch.stack([torch.from_numpy(ds.current_image(k)) for k in b])
            missions = [ds.store.meta(ds.samples[k][0]).mission for k in b]
            z = model(images, missions, current[b])
            blind = model(images, [neutral_instruction] * len(b), current[b])
            cands = [candidates[ds.samples[k][0]] for k in b]
            metrics.update(z, current[b], blind, target[b], cands)
            for name, pred in (("thinker", z), ("blind", blind), ("copy", current[b])):
                hits[name].append(retrieval_hits(pred, target[b], cands))
        values = {k: round(float(v), 4) for k, v in metrics.compute().items()}
        episodes = [ds.samples[k][0] for k in keys]
        thinker_hits = torch.cat(hits["thinker"])
        for name in ("blind", "copy"):  # the thinker's margin over each ablation, episodes resampled
            diff, low, high = episode_bootstrap_difference(thinker_hits, torch.cat(hits[name]), episodes)
            values[f"top1_minus_{name}"] = round(diff, 4)
            values[f"top1_minus_{name}_ci95"] = [round(low, 4), round(high, 4)]
        results[level] = {"samples": len(keys), "episodes": len(ds.episodes), **values}
        low, high = values["top1_minus_blind_ci95"]
        print(
            f"{level}: {len(keys)} samples / {len(ds.episodes)} episodes  top-1 {values['top1']:.1%}  "
            f"blind {values['top1_blind']:.1%} (margin {values['top1_minus_blind']:+.1%}, 95% CI {low:+.1%} to "
            f"{high:+.1%} over episodes)  copy {values['top1_copy']:.1%}  "
            f"mse {values['mse']:.4f} (blind {values['mse_blind']:.4f}, copy {values['mse_copy']:.4f})"
        )
    if out is not None:
        atomic_write_text(out, json.dumps({"thinker": thinker, "world_model": world_model, "levels": results}, indent=2))
    return results
