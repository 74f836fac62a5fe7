"""Tiny VLM construction, the word-level tokenizer and local loading."""

from __future__ import annotations

import pytest
import torch
from thinker_helpers import frames

from thinkjepa.thinker.tokenizer import babyai_missions, train_word_tokenizer
from thinkjepa.thinker.vlm import build_tiny_vlm, load_vlm, save_vlm

KINDS = ["idefics3", "qwen2_vl"]


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
    # Qwen2-VL: the image processor lays out each 2x2 merge group's patches consecutively.
    _, processor = build_tiny_vlm("qwen2_vl", image_size=size, patch_size=patch)
    rows = torch.arange(size).view(size, 1).expand(size, size)
    image = torch.stack([rows, rows.T, torch.zeros_like(rows)]).to(torch.uint8)  # R = row, G = column
    out = processor.image_processor(images=[image], return_tensors="pt", do_normalize=False, do_rescale=False)
    pixels = out["pixel_values"].view(-1, 4, 3, 2, patch, patch)  # (tokens, patches per token, C, T, p, p)
    for token in range(pixels.shape[0]):
        row, col = pixels[token, 0, 0, 0, 0, 0].round().long(), pixels[token, 0, 1, 0, 0, 0].round().long()
        assert image_token_index(row, col, size, patch).item() == token
    assert image_token_index(torch.tensor(-1), torch.tensor(-1), size, patch).item() == -1


@pytest.mark.parametrize("kind", ["idefics3", "qwen2_vl"])
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
