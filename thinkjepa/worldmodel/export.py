"""World-model checkpoints that outlive the trainer: ``config.json`` + ``model.safetensors``.

An exported world model is a directory::

    config.json        {"format_version", "encoder": {...}, "predictor": {...}, ["distance": {...},] "fingerprint",
                        ["shared_encoders": true]}
    model.safetensors  encoder, target encoder, predictor [and goal-distance head] weights
                       (no optimizer, no regularizer); when the two encoders are the same weights (every
                       export after stage 1: the later stages plan with the target encoder alone), the
                       target encoder only, and ``shared_encoders`` says so (half the file)

``fingerprint`` is a SHA-256 over the architecture and every weight; the thinker records it so a
thinker is never silently paired with a world model whose latent space it was not trained in.
:func:`load_world_model` also reads Lightning ``.ckpt`` files directly (weights-only).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from thinkjepa.checkpoint import (
    CheckpointError,
    atomic_path,
    atomic_write_text,
    load_state_dict_strict,
    safe_torch_load,
)
from thinkjepa.configs import as_dataclass
from thinkjepa.worldmodel.encoder import EncoderConfig
from thinkjepa.worldmodel.goal_distance import DistanceConfig, GoalDistance
from thinkjepa.worldmodel.jepa import JEPA
from thinkjepa.worldmodel.predictor import PredictorConfig

FORMAT_VERSION = 1
_PARTS = ("encoder.", "target_encoder.", "predictor.", "distance.")


def inference_state(model: JEPA) -> dict[str, torch.Tensor]:
    """The weights a planner needs: encoders and predictor, contiguous and detached."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(_PARTS)}


def fingerprint(model: JEPA) -> str:
    """SHA-256 of the architecture config and every inference weight (first 16 hex digits)."""
    return _digest(architecture(model), inference_state(model), with_layout=True)


def target_encoder_fingerprint(model: JEPA) -> str:
    """SHA-256 of the encoder config and the target encoder's weights (first 16 hex digits): what
    the latents of a frame depend on, e.g. a latent cache's key."""
    return _digest(asdict(model.encoder.config), model.target_encoder.state_dict(), with_layout=False)


def _digest(header: dict[str, Any], state: dict[str, torch.Tensor], with_layout: bool) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for key, value in sorted(state.items()):
        h.update(key.encode())
        if with_layout:
            h.update(str((value.dtype, tuple(value.shape))).encode())
        h.update(value.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# Config fields added after models were first exported, left out of the architecture (and so of the fingerprint)
# while they hold their default: a model exported before a field existed keeps its fingerprint.
_LATER_FIELDS = {"predictor": {"guidance_dim": 0}}


def architecture(model: JEPA) -> dict[str, Any]:
    out = {"encoder": asdict(model.encoder.config), "predictor": asdict(model.predictor.config)}
    for part, defaults in _LATER_FIELDS.items():
        for key, default in defaults.items():
            if out[part].get(key) == default:
                del out[part][key]
    if model.distance is not None:
        out["distance"] = asdict(model.distance.config)
    return out


def save_world_model(model: JEPA, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, **architecture(model), "fingerprint": fingerprint(model)}
    state = inference_state(model)
    online = {k: v for k, v in state.items() if k.startswith("encoder.")}
    if all(torch.equal(v, state["target_" + k]) for k, v in online.items()):
        state = {k: v for k, v in state.items() if k not in online}
        config["shared_encoders"] = True
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file({k: v.cpu() for k, v in state.items()}, str(tmp))
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2))
    return directory


def _build(config: dict[str, Any], source: Path) -> JEPA:
    try:
        if not (isinstance(config["encoder"], dict) and isinstance(config["predictor"], dict)):
            raise TypeError("encoder and predictor must be mappings")
        enc = as_dataclass(EncoderConfig, config["encoder"])
        pred = as_dataclass(PredictorConfig, config["predictor"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{source}: world-model config is incomplete or malformed ({err})") from err
    model = JEPA(enc, pred)
    model.inverse_dynamics = None  # training-only head, never exported
    if config.get("distance") is not None:
        try:
            dist = as_dataclass(DistanceConfig, config["distance"])
        except TypeError as err:
            raise CheckpointError(f"{source}: world-model distance config is malformed ({err})") from err
        model.distance = GoalDistance(dist, enc.latent_dim)
    return model


def load_world_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> JEPA:
    """Load a frozen world model in eval mode from an export directory or a Lightning ``.ckpt``.

    Raises:
        FileNotFoundError: nothing at ``path`` (or a missing file inside the directory).
        CheckpointError: a corrupt/truncated file, or weights that do not fit the stated architecture
            (the message lists the mismatched keys and shapes).
    """
    path = Path(path)
    if path.is_dir():
        config_file, weights_file = path / "config.json", path / "model.safetensors"
        for f in (config_file, weights_file):
            if not f.is_file():
                raise FileNotFoundError(f"world-model checkpoint is missing {f}")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_file} is not valid JSON ({err})") from err
        try:
            state = load_file(str(weights_file))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{weights_file} is truncated or corrupt ({err})") from err
        model = _build(config, config_file)
        if config.get("shared_encoders"):  # one copy stored for both encoders
            state = {**state, **{k.removeprefix("target_"): v for k, v in state.items() if k.startswith("target_encoder.")}}
        load_state_dict_strict(model, state, str(weights_file))
        expected = config.get("fingerprint")
        if expected is not None and fingerprint(model) != expected:
            raise CheckpointError(f"{weights_file}: weights do not match the fingerprint in {config_file}")
    elif path.suffix == ".ckpt" or path.is_file():
        ckpt = safe_torch_load(path)
        hp = ckpt.get("hyper_parameters", {})
        model = _build(hp, path)
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        state = {k: v for k, v in state.items() if k.startswith(_PARTS)}
        load_state_dict_strict(model, state, str(path))
    else:
        raise FileNotFoundError(f"no world-model checkpoint at {path}")
    return model.to(device).eval().requires_grad_(False)


def world_model_part(value: str | os.PathLike | JEPA) -> tuple[JEPA, str]:
    """A training stage's frozen world model and how its hyperparameters name it.

    ``value`` is a :class:`JEPA` built or loaded by the caller (frozen here, in eval mode, and named
    ``"<in memory>"``) or the path of an export or ``.ckpt`` (loaded with :func:`load_world_model`).
    """
    if isinstance(value, JEPA):
        return value.eval().requires_grad_(False), "<in memory>"
    return load_world_model(value), str(Path(value))
