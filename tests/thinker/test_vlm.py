"""Tiny VLM construction, the word-level tokenizer and local loading."""

from __future__ import annotations

import pytest
import torch
import transformers
from thinker_helpers import frames

from thinkjepa.thinker.tokenizer import babyai_missions, train_word_tokenizer
from thinkjepa.thinker.vlm import build_tiny_vlm, load_vlm, save_vlm

KINDS = ["idefics3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
QWEN_KINDS = KINDS[1:]
FAMILY_CLASS = {
    "idefics3": "Idefics3ForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}
FAMILY_PROCESSOR = {
    "idefics3": "Idefics3Processor",
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
}


def _inputs(processor, n: int = 2) -> dict[str, torch.Tensor]:
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "go to the red ball"}]}
    text = processor.apply_chat_template([message], add_generation_prompt=True, tokenize=False)
    return processor(
        images=list(frames(n).permute(0, 3, 1, 2)), text=[text] * n, padding=True, return_tensors="pt"
    )


def test_tokenizer_covers_babyai_words_and_keeps_special_tokens() -> None:
    tok = train_word_tokenizer(special_tokens=["<image>"])
    ids = tok("<image>Pick up the purple key, then go to a door behind you")["input_ids"]
    words = tok.convert_ids_to_tokens(ids)
    assert words[0] == "<image>" and tok.unk_token not in words
    assert words[1:5] == ["pick", "up", "the", "purple"]
    assert tok.convert_ids_to_tokens(tok("xyzzy")["input_ids"]) == [tok.unk_token]
    assert len(tok) < 64 and len(babyai_missions()) > 100


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_vlm_is_deterministic_and_round_trips(kind: str, tmp_path) -> None:
    model, processor = build_tiny_vlm(kind)
    assert isinstance(model, getattr(transformers, FAMILY_CLASS[kind]))  # the real family's own classes
    assert isinstance(processor, getattr(transformers, FAMILY_PROCESSOR[kind]))
    again, again_proc = build_tiny_vlm(kind)
    assert again_proc.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    inputs = _inputs(processor)
    n_image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum(1)
    assert n_image_tokens.tolist() == [(64 // 8) ** 2 // 4] * 2  # no image splitting
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape[-1] == 64

    save_vlm(model, processor, tmp_path / "vlm")
    loaded, loaded_proc = load_vlm(tmp_path / "vlm")
    assert type(loaded) is type(model) and type(loaded_proc) is type(processor)
    reloaded_inputs = _inputs(loaded_proc)
    assert all(torch.equal(inputs[k], reloaded_inputs[k]) for k in inputs)
    with torch.no_grad():
        out2 = loaded(**reloaded_inputs, output_hidden_states=True)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, out2.hidden_states))


def test_missing_vlm_gives_file_not_found_naming_the_path(tmp_path) -> None:
    missing = tmp_path / "no-such-vlm"
    with pytest.raises(FileNotFoundError, match="no-such-vlm"):
        load_vlm(missing)
    with pytest.raises(FileNotFoundError, match="nobody/not-a-cached-model.*local Hugging Face cache"):
        load_vlm("nobody/not-a-cached-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vlm(tmp_path / "empty")


def test_image_token_index_follows_each_tiny_vlms_token_order() -> None:
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector

    from thinkjepa.thinker.vlm import image_token_index

    size, patch = 64, 8
    side = size // patch
    # Idefics3: patches are row-major; the pixel shuffle merges 2x2 of them into each token.
    patch_ids = torch.arange(side * side, dtype=torch.float32).view(1, -1, 1)
    merged = Idefics3Connector.pixel_shuffle(None, patch_ids, 2)[0].long()  # (tokens, 4) patch ids per token
    for token, ids in enumerate(merged.tolist()):
        for pid in ids:
            row, col = (pid // side) * patch + patch // 2, (pid % side) * patch + patch // 2
            assert image_token_index(torch.tensor(row), torch.tensor(col), size, patch).item() == token
    # The Qwen families: the image processor lays out each 2x2 merge group's patches consecutively.
    rows = torch.arange(size).view(size, 1).expand(size, size)
    image = torch.stack([rows, rows.T, torch.zeros_like(rows)]).to(torch.uint8)  # R = row, G = column
    for kind in QWEN_KINDS:
        _, processor = build_tiny_vlm(kind, image_size=size, patch_size=patch)
        out = processor.image_processor(images=[image], return_tensors="pt", do_normalize=False, do_rescale=False)
        pixels = out["pixel_values"].view(-1, 4, 3, 2, patch, patch)  # (tokens, patches per token, C, T, p, p)
        assert pixels.shape[0] == (size // patch // 2) ** 2, kind
        for token in range(pixels.shape[0]):
            row, col = pixels[token, 0, 0, 0, 0, 0].round().long(), pixels[token, 0, 1, 0, 0, 0].round().long()
            assert image_token_index(row, col, size, patch).item() == token, kind
    assert image_token_index(torch.tensor(-1), torch.tensor(-1), size, patch).item() == -1


@pytest.mark.parametrize("kind", KINDS)
def test_merge_1_gives_one_language_model_token_per_patch(kind: str) -> None:
    from thinkjepa.thinker.head import PyramidLatentHead
    from thinkjepa.thinker.thinker import Thinker
    from thinkjepa.thinker.vlm import image_token_index

    model, processor = build_tiny_vlm(kind, image_size=32, patch_size=8, merge=1)
    head = PyramidLatentHead([-1], model.config.get_text_config().hidden_size, 4, residual=False)
    thinker = Thinker(model, processor, head)
    hidden, inputs = thinker.encode(frames(2)[:, :32, :32].contiguous(), ["go to the red ball"] * 2)
    assert thinker.image_mask(inputs).sum(dim=1).tolist() == [16, 16]  # (32 / 8)^2 patches, none merged
    assert hidden[-1].shape[0] == 2
    rows, cols = torch.tensor([0, 9, 31]), torch.tensor([0, 17, 31])
    assert image_token_index(rows, cols, 32, 8, merge=1).tolist() == [0, 6, 15]
    with pytest.raises(ValueError, match="multiple of merge \\* patch_size=16"):
        build_tiny_vlm(kind, image_size=40, patch_size=8, merge=2)


def test_qwen2_5_and_qwen3_stand_ins_keep_their_familys_vision_towers() -> None:
    """Qwen2.5-VL: windowed attention in all vision blocks but the last. Qwen3-VL: learned position embeddings on
    the patch grid, and deepstack: a vision block's merged features are added to the first decoder layer's image
    tokens (zeroing that merger changes the language model's states of the image tokens and, causally, of those
    after them, never of those before the image)."""
    q25, _ = build_tiny_vlm("qwen2_5_vl")
    vision = q25.config.vision_config
    assert vision.fullatt_block_indexes == [1] and vision.window_size == 32  # 2 x 2 tokens per window of 4 x 4

    model, processor = build_tiny_vlm("qwen3_vl")
    vision = model.config.vision_config
    assert vision.deepstack_visual_indexes == [0] and vision.num_position_embeddings == (64 // 8) ** 2
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    inputs = _inputs(processor, n=1)
    with torch.no_grad():
        before = model(**inputs, output_hidden_states=True).hidden_states[-1]
        torch.nn.init.zeros_(model.model.visual.deepstack_merger_list[0].linear_fc2.weight)
        torch.nn.init.zeros_(model.model.visual.deepstack_merger_list[0].linear_fc2.bias)
        after = model(**inputs, output_hidden_states=True).hidden_states[-1]
    changed = (before - after).abs().amax(-1)[0] > 0  # (S,) tokens whose last hidden state moved
    is_image = inputs["input_ids"][0] == model.config.image_token_id
    assert changed[is_image].all() and not changed[: int(is_image.int().argmax())].any()  # causal: before the image, none


@pytest.mark.parametrize("kind", KINDS)
def test_image_token_index_is_where_the_models_image_features_land(kind: str) -> None:
    """Inverting one ``merge * patch`` block of the image moves the language-model input of the image token that
    image_token_index names the most (through the vision tower, Qwen2.5-VL's window reordering and back, Qwen3-VL's
    position embeddings, and each family's merger)."""
    from thinkjepa.thinker.vlm import image_token_index

    model, processor = build_tiny_vlm(kind)  # 64 px, 8 px patches, 2 x 2 merged: 16 px blocks
    base = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "go to the red ball"}]}
    text = processor.apply_chat_template([message], add_generation_prompt=True, tokenize=False)

    def image_inputs(image: torch.Tensor) -> torch.Tensor:  # (tokens, H) embeddings the LM gets for the image
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        with torch.no_grad():
            embeddings = model(**inputs, output_hidden_states=True).hidden_states[0][0]
        return embeddings[inputs["input_ids"][0] == model.config.image_token_id]

    reference = image_inputs(base)
    for row, col in [(0, 0), (5, 40), (33, 17), (63, 63)]:
        image, r, c = base.clone(), row // 16 * 16, col // 16 * 16
        image[:, r : r + 16, c : c + 16] = 255 - image[:, r : r + 16, c : c + 16]
        moved = (image_inputs(image) - reference).abs().sum(-1).argmax().item()
        assert moved == image_token_index(torch.tensor(row), torch.tensor(col), 64, 8).item(), (row, col)
