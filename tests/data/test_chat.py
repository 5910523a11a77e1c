"""format_prompt and ChatCollator with the shipped SmolLM2 tokenizer."""

from __future__ import annotations

import pytest
import torch

from zhyper.data import ChatCollator, format_prompt

FEATURES = [
    {"prompt": "How many legs does a spider have?", "response": "A SPIDER HAS 8 LEGS.", "description": "Shout.",
     "system": ""},
    {"prompt": "How many days are in a leap year? " * 3, "response": "366", "description": "Only the number.",
     "system": "You are terse."},
]


def _decode(tok, ids):
    return tok.decode([int(i) for i in ids])


def test_format_prompt_uses_the_chat_template(tokenizer):
    text = format_prompt(tokenizer, "Hi?", system="Be brief.")
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert "Shout." not in format_prompt(tokenizer, "Hi?", description="Shout.")
    assert "user\nShout.\n\nHi?<|im_end|>" in format_prompt(tokenizer, "Hi?", description="Shout.",
                                                             description_in_prompt=True)
    with pytest.raises(ValueError, match="description: description_in_prompt=True needs a non-empty"):
        format_prompt(tokenizer, "Hi?", description_in_prompt=True)


def test_batch_shapes_padding_and_response_only_labels(tokenizer):
    batch = ChatCollator(tokenizer)(FEATURES)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.dtype == mask.dtype == labels.dtype == torch.long and ids.shape == mask.shape == labels.shape
    assert batch["descriptions"] == ["Shout.", "Only the number."]
    lengths = mask.sum(1)
    assert lengths[0] != lengths[1]
    for b, f in enumerate(FEATURES):
        n = int(lengths[b])
        assert mask[b, :n].all() and not mask[b, n:].any()  # right padding
        assert (labels[b, n:] == -100).all() and (ids[b, n:] == tokenizer.pad_token_id).all()
        assert _decode(tokenizer, labels[b][labels[b] != -100]) == f["response"] + "<|im_end|>\n"
        prompt = format_prompt(tokenizer, f["prompt"], system=f["system"])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert ids[b, :len(prompt_ids)].tolist() == prompt_ids  # training prompt == generation prompt
        assert (labels[b, :len(prompt_ids)] == -100).all()


def test_description_in_prompt_changes_the_inputs_not_the_labels(tokenizer):
    plain = ChatCollator(tokenizer)(FEATURES[:1])
    prompted = ChatCollator(tokenizer, description_in_prompt=True)(FEATURES[:1])
    assert prompted["input_ids"].shape[1] > plain["input_ids"].shape[1]
    assert "Shout." in _decode(tokenizer, prompted["input_ids"][0]) and "Shout." not in _decode(tokenizer,
                                                                                               plain["input_ids"][0])
    lab_a, lab_b = plain["labels"][0], prompted["labels"][0]
    assert lab_a[lab_a != -100].tolist() == lab_b[lab_b != -100].tolist()


def test_truncation_cuts_the_prompt_body_and_keeps_the_template(tokenizer):
    full = ChatCollator(tokenizer)(FEATURES[1:])
    n = int(full["attention_mask"].sum())
    cut = ChatCollator(tokenizer, max_length=n - 5 + 4, description_in_prompt=True)(FEATURES[1:])
    assert cut["input_ids"].shape[1] == n - 1  # 4 description tokens in, 5 body tokens out
    text = _decode(tokenizer, cut["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nOnly the number.\n\n"
                           "How many days")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n366<|im_end|>\n")
    assert text.count("leap year") < 3
    labels = cut["labels"][0]
    assert _decode(tokenizer, labels[labels != -100]) == "366<|im_end|>\n"


def test_truncation_keeps_the_prompt_start_then_cuts_the_response_end(tokenizer):
    feature = [{"prompt": "Why? " * 40, "response": "word " * 100, "description": "d"}]
    out = ChatCollator(tokenizer, max_length=80, min_prompt_tokens=4)(feature)
    assert out["input_ids"].shape == (1, 80)
    text = _decode(tokenizer, out["input_ids"][0])
    assert "user\nWhy? Why?<|im_end|>\n<|im_start|>assistant\nword word" in text
    assert not text.endswith("<|im_end|>\n")
    labels = out["labels"][0]
    assert _decode(tokenizer, labels[labels != -100]).startswith("word word")
    # with no protected prompt tokens the body goes first and the response keeps more tokens
    loose = ChatCollator(tokenizer, max_length=80, min_prompt_tokens=0)(feature)
    assert int((loose["labels"] != -100).sum()) > int((labels != -100).sum())


def test_too_short_max_length_and_bad_features_raise(tokenizer):
    with pytest.raises(ValueError, match="max_length: 20 tokens cannot hold features\\[0\\]'s chat template"):
        ChatCollator(tokenizer, max_length=20)(FEATURES[:1])
    with pytest.raises(ValueError, match=r"features\[0\]: missing keys \['description'\]"):
        ChatCollator(tokenizer)([{"prompt": "a", "response": "b"}])
    with pytest.raises(ValueError, match="max_length: expected an int >= 8"):
        ChatCollator(tokenizer, max_length=4)
    with pytest.raises(ValueError, match="features: expected at least one feature"):
        ChatCollator(tokenizer)([])
