"""Chat formatting and the training collator (response-only labels, template-safe truncation).

A training sequence is ``format_prompt(...) + response + end_of_turn`` where end_of_turn is what
the tokenizer's chat template writes after an assistant message (``<|im_end|>\\n`` for SmolLM2).
The text is tokenised in one call with ``add_special_tokens=False`` (the template already holds
its special tokens), so the prompt's ids are exactly what ``generate`` sees for
``tokenizer(format_prompt(...), add_special_tokens=False)``.

Labels are IGNORE_INDEX (-100) everywhere except the response and end-of-turn tokens. When a sequence exceeds
``max_length``, tokens are removed, in this order: from the end of the user prompt body down to
its first ``min_prompt_tokens``; from the end of the response down to one token; from the rest of
the prompt body. The template (its start, the system message, a description placed in the prompt,
the assistant header) is never cut; if it alone does not fit, a ValueError says so.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

_SENTINEL = "\u2063zhyper-body\u2063"
IGNORE_INDEX = -100  # labels of tokens outside the response (PyTorch's cross-entropy default)


def _user_content(prompt: str, description: str | None, description_in_prompt: bool) -> tuple[str, int]:
    """(user message, length of the kept header before the truncatable prompt body)."""
    if not description_in_prompt:
        return prompt, 0
    if not description:
        raise ValueError("description: description_in_prompt=True needs a non-empty description, got "
                         f"{description!r}")
    header = f"{description}\n\n"
    return header + prompt, len(header)


def _messages(user: str, system: str, assistant: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": user})
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return msgs


def format_prompt(tokenizer: Any, prompt: str, system: str = "", description: str | None = None,
                  description_in_prompt: bool = False) -> str:
    """The chat-template text that ends with the assistant header (``add_generation_prompt=True``).

    system: system message ("" = none, so the template's default applies). The description is
    only placed in the prompt (before the user message, blank line between) when
    ``description_in_prompt`` (the prompting baseline); otherwise it reaches the model through the
    hypernetwork and is ignored here.
    """
    user, _ = _user_content(prompt, description, description_in_prompt)
    return tokenizer.apply_chat_template(_messages(user, system), tokenize=False, add_generation_prompt=True)


class ChatCollator:
    """Turns features ``{prompt, response, description, system?}`` into a right-padded batch.

    Returns input_ids (b, t) long, attention_mask (b, t) long, labels (b, t) long with IGNORE_INDEX off
    the response, and descriptions: list[str] (b) for the hypernetwork. t = longest sequence
    (<= max_length).
    """

    def __init__(self, tokenizer: Any, max_length: int = 512, description_in_prompt: bool = False,
                 min_prompt_tokens: int = 16) -> None:
        if not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length: expected an int >= 8, got {max_length!r}")
        if not isinstance(min_prompt_tokens, int) or min_prompt_tokens < 0:
            raise ValueError(f"min_prompt_tokens: expected an int >= 0, got {min_prompt_tokens!r}")
        self.min_prompt_tokens = min_prompt_tokens
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"tokenizer: {type(tokenizer).__name__} has no chat_template")
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"tokenizer: a fast tokenizer (offset mapping) is required, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.description_in_prompt = description_in_prompt
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("tokenizer: needs a pad_token_id or an eos_token_id for padding")
        self.pad_id = int(pad)
        self._frames: dict[str, tuple[int, int, str]] = {}

    def _frame(self, system: str) -> tuple[int, int, str]:
        """(chars before the user content, chars after it up to the answer, end-of-turn text) for ``system``."""
        if system not in self._frames:
            tok = self.tokenizer
            prompt = tok.apply_chat_template(_messages(_SENTINEL, system), tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(_messages(_SENTINEL, system, _SENTINEL), tokenize=False)
            if prompt.count(_SENTINEL) != 1 or not full.startswith(prompt):
                raise ValueError("tokenizer: its chat template does not render a conversation as the generation "
                                 "prompt followed by the answer; cannot build response-only labels")
            start = prompt.index(_SENTINEL)
            end_of_turn = full[len(prompt) + len(_SENTINEL):]
            self._frames[system] = (start, len(prompt) - start - len(_SENTINEL), end_of_turn)
        return self._frames[system]

    def _texts(self, features: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[tuple[int, int, int]]]:
        texts, spans = [], []
        for i, f in enumerate(features):
            missing = [k for k in ("prompt", "response", "description") if k not in f]
            if missing:
                raise ValueError(f"features[{i}]: missing keys {missing}; got {sorted(f)}")
            system = f.get("system") or ""
            user, header = _user_content(f["prompt"], f["description"], self.description_in_prompt)
            prompt_text = self.tokenizer.apply_chat_template(_messages(user, system), tokenize=False,
                                                             add_generation_prompt=True)
            before, after, end_of_turn = self._frame(system)
            body = (before + header, len(prompt_text) - after)  # the user prompt body: the truncatable span
            texts.append(prompt_text + f["response"] + end_of_turn)
            spans.append((*body, len(prompt_text)))
        return texts, spans

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("features: expected at least one feature, got an empty list")
        texts, spans = self._texts(features)
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        rows = [self._fit(ids, offsets, span, i)
                for i, (ids, offsets, span) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], spans))]
        t = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), t), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), t), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for b, (ids, lab) in enumerate(rows):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            labels[b, :len(ids)] = torch.tensor(lab)
            mask[b, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
                "descriptions": [str(f["description"]) for f in features]}

    def _fit(self, ids: list[int], offsets: list[tuple[int, int]], span: tuple[int, int, int],
             index: int) -> tuple[list[int], list[int]]:
        """(ids, labels) of one sequence, truncated to max_length as the module docstring says."""
        body_start, body_end, answer_start = span
        is_answer = [end > answer_start for _, end in offsets]
        excess = len(ids) - self.max_length
        if excess > 0:
            body = [j for j, (s, e) in enumerate(offsets) if s >= body_start and e <= body_end and e > s]
            answer = [j for j in range(len(ids)) if is_answer[j]]
            spare_body = max(0, len(body) - self.min_prompt_tokens)
            n_body = min(excess, spare_body)  # 1) the body's tail, keeping its first min_prompt_tokens
            n_answer = min(excess - n_body, len(answer) - 1)  # 2) the response's tail, keeping one token
            n_rest = min(excess - n_body - n_answer, len(body) - n_body)  # 3) the rest of the body
            if n_body + n_answer + n_rest < excess:
                raise ValueError(f"max_length: {self.max_length} tokens cannot hold features[{index}]'s chat "
                                 f"template and any response token ({len(ids) - len(body) - len(answer)} "
                                 "template tokens)")
            drop = set(body[len(body) - n_body - n_rest:]) | set(answer[len(answer) - n_answer:])
            keep = [j for j in range(len(ids)) if j not in drop]
            ids = [ids[j] for j in keep]
            is_answer = [is_answer[j] for j in keep]
        return ids, [tok if a else IGNORE_INDEX for tok, a in zip(ids, is_answer)]
