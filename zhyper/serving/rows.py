"""One request while it decodes: its answer text so far, what was sent, when it ends.

A ``Row`` takes one token at a time (``accept``): it ends on end of turn (unless ``ignore_eos``), a stop
string (the answer ends before the first one), ``max_tokens`` or the context length; otherwise it sends
the new text, holding back the end that could be the start of a stop string and the bytes of an
unfinished UTF-8 character (tokenizers' ``DecodeStream``). The finishing event carries exactly
``tokenizer.decode`` of the answer (what HF ``generate`` users get) and the token usage.

Nothing here touches the batch's tensors: the engine keeps those (``kv.RunningBatch``).
"""

from __future__ import annotations

from typing import Sequence

from .requests import Event, Request, send


class Detokenizer:
    """Incremental text of a growing token list (tokenizers' DecodeStream: O(1) per token, holds back
    incomplete UTF-8); the final text is the full decode, exactly what ``tokenizer.decode`` gives."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers.decoders import DecodeStream

            self._backend, self._stream = backend, DecodeStream(skip_special_tokens=True)
        else:
            self._backend = self._stream = None
        self.ids: list[int] = []
        self.text = ""

    def add(self, token: int) -> None:
        self.ids.append(token)
        if self._stream is not None:
            piece = self._stream.step(self._backend, token)
            if piece:
                self.text += piece
        else:
            self.text = self.full()

    def full(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)


class Row:
    """A request while it is in the running batch; counts its tokens and its finish in the engine's ``stats``."""

    def __init__(self, request: Request, tokenizer, device, stats: dict):
        self.request, self.stats = request, stats
        self.params = request.params
        self.detok = Detokenizer(tokenizer)
        self.n_generated = 0
        self.emitted = 0  # characters of detok.text already sent
        self.finished = False
        self.final: Event | None = None  # the finish event, sent by the engine once the row left the batch
        self.generator = None
        if not self.params.greedy and self.params.seed is not None:
            import torch

            self.generator = torch.Generator(device=device).manual_seed(int(self.params.seed))

    @property
    def live(self) -> bool:
        """Still decoding: neither finished (or failed) nor cancelled."""
        return not (self.finished or self.request.cancelled)

    @property
    def remaining(self) -> int:
        """Tokens this row may still generate (its max_tokens less those generated)."""
        return self.params.max_tokens - self.n_generated

    def accept(self, token: int, eos_ids: frozenset, max_context: int | None) -> bool:
        """Add one token (the row is live): send new text; True when the row finished with it."""
        p = self.params
        self.n_generated += 1
        self.stats["tokens"] += 1
        if token in eos_ids and not p.ignore_eos:
            return self.finish("stop")
        self.detok.add(token)
        text = self.detok.text
        if p.stop:
            start = max(0, self.emitted - max(len(s) for s in p.stop))
            hits = [i for i in (text.find(s, start) for s in p.stop) if i >= 0]
            if hits:
                return self.finish("stop", text[:min(hits)])
        if self.n_generated >= p.max_tokens:
            return self.finish("length")
        if max_context is not None and len(self.request.prompt_ids) + self.n_generated >= max_context:
            return self.finish("length")
        end = len(text) - stop_holdback(text, p.stop) if p.stop else len(text)
        if end > self.emitted:
            send(self.request, Event("text", text=text[self.emitted:end]))
            self.emitted = end
        return False

    def finish(self, reason: str, text: str | None = None) -> bool:
        """Send what is left of the answer and keep the finish event (reason, whole text, usage) in ``final``
        for ``send_final``; returns True."""
        if text is None:
            text = self.detok.full()  # exactly tokenizer.decode of the answer (what HF generate users get)
        sent = self.detok.text[:self.emitted]
        if len(text) > self.emitted and text.startswith(sent):
            send(self.request, Event("text", text=text[self.emitted:]))
        self.finished = True
        self.stats["finished"] += 1
        n_prompt = len(self.request.prompt_ids)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": self.n_generated,
                 "total_tokens": n_prompt + self.n_generated}
        self.final = Event("finish", text=text, finish_reason=reason, usage=usage)
        return True

    def send_final(self) -> None:
        """Send the finish event kept by ``finish`` (once). The engine calls it after the row left the batch
        and, when the batch is empty, after the layers' modulation is restored: a caller woken by the
        event may use the model at once."""
        final, self.final = self.final, None
        if final is not None:
            send(self.request, final)


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that could be the start of a stop string (not sent yet)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold
