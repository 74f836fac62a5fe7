"""Build a thinker from its parts: the VLM (tiny or pretrained), optional LoRA adapters, the latent head, and
the world model whose latent space its subgoals live in; optionally started from an earlier thinker or a
grounding-pretrained VLM. The training stage (:class:`~thinkjepa.train.thinker.ThinkerModule`) calls
:func:`build_thinker`; so can anyone who wants a fresh thinker in their own loop."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import torch
from peft import LoraConfig, PeftModel

from thinkjepa.checkpoint import load_state_dict_strict
from thinkjepa.thinker.checkpoint import clean_base_state, load_thinker
from thinkjepa.thinker.grounded import is_grounded_vlm, load_grounded_readout, load_grounded_vlm
from thinkjepa.thinker.head import HeadOptions, PyramidLatentHead
from thinkjepa.thinker.lora import apply_lora, set_trainable
from thinkjepa.thinker.thinker import Thinker
from thinkjepa.thinker.vlm import TEXT_MODEL_LORA_TARGETS, PretrainedVLM, TinyVLM, build_tiny_vlm, load_vlm
from thinkjepa.worldmodel.jepa import JEPA


def plain(value: Any) -> Any:
    """``value`` as plain JSON types (checkpoint hyperparameters must load with ``weights_only=True``)."""
    return json.loads(json.dumps(value, default=str))


def lora_settings(config: LoraConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from peft's defaults, as plain values."""
    defaults = plain(LoraConfig().to_dict())
    return {k: v for k, v in plain(config.to_dict()).items() if v != defaults.get(k)}


def lora_config(config: LoraConfig | dict[str, Any] | None) -> LoraConfig | None:
    """A plain ``LoraConfig``; with no ``target_modules``/``target_parameters``, the language model's linears."""
    if config is None:
        return None
    values = dict(config) if isinstance(config, dict) else lora_settings(config)
    values = {k: v for k, v in values.items() if k not in ("peft_type", "peft_version")}
    if values.get("target_modules") is None and values.get("target_parameters") is None:
        values["target_modules"] = TEXT_MODEL_LORA_TARGETS
    return LoraConfig(**values)


def start_from(thinker: Thinker, source: str, saved: Thinker | None = None) -> None:
    """Copy the VLM (base weights and adapters) and the head of the thinker exported at ``source``.

    Which parameters train is left as ``thinker`` declares it. The source's world model is not checked:
    starting from a thinker trained elsewhere is the point. Where only one of the two has LoRA adapters:

    * the source has them, ``thinker`` not: its adapters are merged into its weights, which are copied;
    * ``thinker`` has them, the source not: the source's VLM must already be ``thinker``'s base, copied into
      the bare model before the adapters went on (:func:`build_thinker` does, as for a grounded VLM), so that
      the fresh adapters finetune it; this is checked, and the head is copied.

    Args:
        thinker: The thinker to fill.
        source: The exported thinker's directory.
        saved: That thinker, if already loaded with :func:`~thinkjepa.thinker.checkpoint.load_thinker`.

    Raises:
        FileNotFoundError: No thinker checkpoint at ``source``.
        StateDictMismatchError: Another VLM or head architecture (every differing name and shape listed).
        ValueError: ``thinker`` has adapters, the source none, and its base VLM is not the source's.
    """
    saved = load_thinker(source) if saved is None else saved
    mine, theirs = isinstance(thinker.vlm, PeftModel), isinstance(saved.vlm, PeftModel)
    if mine and not theirs:
        base, state = clean_base_state(thinker.base_vlm), saved.vlm.state_dict()
        differ = sorted(k for k in base.keys() | state.keys()
                        if k not in base or k not in state or not torch.equal(base[k], state[k]))
        if differ:
            raise ValueError(
                f"init_from={source} was trained without LoRA adapters: its VLM must be copied into this thinker's "
                f"bare VLM before the adapters go on (ThinkerModule does); {len(differ)} weights differ, e.g. {differ[:5]}"
            )
    else:
        vlm = saved.vlm.merge_and_unload() if theirs and not mine else saved.vlm
        load_state_dict_strict(thinker.vlm, vlm.state_dict(), f"init_from={source} (VLM)")
    load_state_dict_strict(thinker.head, saved.head.state_dict(), f"init_from={source} (head)")


def build_thinker(
    world_model: JEPA,
    vlm: TinyVLM | PretrainedVLM,
    lora: LoraConfig | None = None,
    trainable: tuple[str, ...] | list[str] = (),
    head: HeadOptions = HeadOptions(),
    prompt: str = "{instruction}",
    text_first: bool = False,
    init_from: str | None = None,
) -> Thinker:
    """A thinker proposing subgoals in ``world_model``'s latent space.

    Args:
        world_model: The (frozen) world model.
        vlm: A tiny VLM spec (random init from its seed) or a pretrained VLM to load (local files only).
        lora: LoRA adapters to add (``None``: none; the VLM then trains as ``trainable`` declares).
        trainable: Regexes of base-VLM parameter names that train besides the adapters and the head.
        head: The latent head's options.
        prompt: Text shown with the image; ``{instruction}`` is replaced by the mission.
        text_first: The instruction before the image.
        init_from: An exported thinker (its weights are copied, see :func:`start_from`) or a grounded VLM export
            of the same tiny spec (copied before the adapters go on; its read-out starts the head's grounded pool).

    Raises:
        ValueError: ``init_from`` is a grounded tiny VLM and ``vlm`` is not a tiny spec, or the weights differ in
            architecture (every mismatch named).
    """
    if isinstance(vlm, TinyVLM):
        model, processor = build_tiny_vlm(**asdict(vlm))
    else:
        model, processor = load_vlm(
            vlm.model_path, dtype=vlm.dtype, processor_kwargs=vlm.processor_kwargs
        )
    grounded = init_from is not None and is_grounded_vlm(init_from)
    start = load_thinker(init_from) if init_from is not None and not grounded else None
    # The VLM to finetune is copied before any adapters go on, so that they finetune it (and an adapter
    # init that reads the base weights sees these).
    if grounded:
        if not isinstance(vlm, TinyVLM):
            raise ValueError(f"init_from={init_from} is a grounded tiny VLM: set vlm to its TinyVLM spec")
        load_grounded_vlm(model, init_from, vlm, prompt, text_first)
    elif start is not None and lora is not None and not isinstance(start.vlm, PeftModel):
        # a thinker trained without adapters (e.g. every weight): its VLM is the base of this run's adapters
        load_state_dict_strict(model, start.vlm.state_dict(), f"init_from={init_from} (VLM)")
    model = apply_lora(model, lora)
    set_trainable(model, trainable)
    text = model.config.get_text_config()
    latent_head = PyramidLatentHead(
        **asdict(head), hidden_size=text.hidden_size, latent_dim=world_model.latent_dim
    )
    thinker = Thinker(model, processor, latent_head, prompt=prompt, world_model=world_model, text_first=text_first)
    if grounded:
        load_grounded_readout(latent_head, init_from, text.num_hidden_layers + 1)
    elif start is not None:
        start_from(thinker, init_from, start)
    return thinker
