"""The batching engine: one thread, one decode loop, every request a row with its own modulation.

This file is the scheduler: the bounded queue, admission, the loop and its failures. The other parts
read alone:

    requests.py   Request, SamplingParams, Event, the library call's Waiter (what clients see)
    rows.py       one row's answer text: tokens in, text events out, when it finishes
    kv.py         the running batch's tensors: a KV cache written in place (slabs), mask, positions,
                  modulation; rows joining (merge) and leaving (keep_live)
    sampling.py   the next token of every row, and the verdict on a row whose logits are unusable

Requests wait in a bounded queue (``submit`` raises ``QueueFull`` past ``max_queue``). Before every
decode step the loop admits waiting requests up to ``max_batch`` rows (continuous batching). With an
admission window (``admit_window`` seconds), a waiting request is admitted once the oldest waiting
one has waited that long or the free rows are all claimed, so requests arriving a few milliseconds
apart share one prefill; the running rows keep decoding while the window is open.

    admit   prompts of the new rows, left-padded to their longest, one forward with their
            modulation rows into a fresh cache -> each row's first token, sent at once; merged into
            the running batch (``RunningBatch.merge``). With ``prefill_tokens``, an admitted group
            whose padded prompts hold more tokens is prefilled in pieces (``prefill_pieces``), each
            piece's first tokens sent before the next piece runs: requests that arrive together then
            get their first token one piece apart instead of all after the whole prefill
    step    one token for every row (``RunningBatch.step_inputs``); the batch's modulation stays
            installed on every ZLinear (``model.conditioned``, held open) while the batch is unchanged
    leave   rows that finished (end of turn, a stop string, max_tokens, cancelled, failed) are dropped
            at once (``RunningBatch.keep_live``)

A finished row's response completes at once; it never waits for the longest row. Padding slots hold
zero keys/values and are masked, so a row's tokens are those it would get alone, up to
floating-point summation order (greedy rows equal ``ZhyperModel.generate``; tests check it).

Each request gets events through its ``sink`` (called on the engine thread; keep it cheap):
``Event("text", text=...)`` for new answer text, then exactly one ``Event("finish", ...)`` with
the whole answer, the finish reason and the token usage, or ``Event("error", message=..., code=...,
status=...)``.

Fault isolation: a request whose own part fails (its modulation or its logits are not finite, its
logits are constant because its activations overflowed, its sampling raises) gets its error alone and
leaves the batch; the other rows go on with the tokens they would get alone (``sampling``). Only a
failed forward fails the rows it ran.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections import deque
from typing import Callable, Sequence

import torch

from .cache import ModulationCache, cat_rows, select_rows
from .kv import RunningBatch, new_cache
from .logsafe import safe_logger
from .requests import (MAX_DESCRIPTIONS, SEED_MAX, SEED_MIN, EngineStopped, Event, QueueFull, Request,
                       SamplingParams, Waiter, quote, send)
from .rows import Row
from .sampling import choose

logger = safe_logger(__name__)

# the request side is importable from here too (its home is requests.py)
__all__ = ["Engine", "EngineStopped", "Event", "MAX_DESCRIPTIONS", "QueueFull", "Request", "SEED_MAX", "SEED_MIN",
           "SamplingParams"]


class Engine:
    """Continuous batching over a ZhyperModel with one modulation row per request.

    Args:
        model: a ZhyperModel with a tokenizer (put in eval mode).
        max_batch: most rows decoded together.
        max_queue: most requests waiting to be admitted; ``submit`` raises ``QueueFull`` beyond.
        cache_size: entries of the description -> modulation LRU (0 disables it).
        default_max_tokens: max_tokens of a request that sets none (capped by the context length).
        admit_window: seconds a waiting request may wait for others to share its prefill (0: none).
        prefill_tokens: most padded prompt tokens (rows x longest prompt) in one prefill forward; a larger
            admitted group is prefilled in pieces, each piece's first tokens sent before the next
            (None: one forward per admission).
    """

    def __init__(self, model, max_batch: int = 32, max_queue: int = 256, cache_size: int = 1024,
                 default_max_tokens: int = 256, admit_window: float = 0.0, prefill_tokens: int | None = None):
        for name, value, low in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1),
                                 ("default_max_tokens", default_max_tokens, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if isinstance(admit_window, bool) or not isinstance(admit_window, (int, float)) or not 0 <= admit_window <= 10:
            raise ValueError(f"admit_window: expected seconds in [0, 10], got {admit_window!r}")
        self.admit_window = float(admit_window)
        if prefill_tokens is not None and (not isinstance(prefill_tokens, int) or isinstance(prefill_tokens, bool)
                                           or prefill_tokens < 1):
            raise ValueError(f"prefill_tokens: expected None or an int >= 1, got {prefill_tokens!r}")
        self.prefill_tokens = prefill_tokens
        self.listeners: list[Callable[[str, object], None]] = []  # ("step", rows) and ("admit", [queue waits])
        if model.tokenizer is None:
            raise ValueError("model: the engine needs a tokenizer (load the checkpoint with its base model's)")
        self.model = model.eval()
        self.base, self.layout, self.tokenizer = model.base, model.layout, model.tokenizer
        self.max_batch, self.max_queue, self.default_max_tokens = max_batch, max_queue, default_max_tokens
        self.cache = ModulationCache(model, cache_size)
        self.device = next(iter(self.base.parameters())).device
        cfg = getattr(self.base, "config", None)
        self.max_context = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
        eos = getattr(getattr(self.base, "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(int(e) for e in eos)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        params = inspect.signature(self.base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_logits = "logits_to_keep" in params
        self._cond = threading.Condition()
        self._pending: deque[Request] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._held: contextlib.ExitStack | None = None  # the running batch's modulation, installed (see _hold)
        self._held_mod = None
        self._reset_batch()
        self.stats = {"steps": 0, "prefills": 0, "tokens": 0, "prompt_tokens": 0, "peak_rows": 0, "finished": 0,
                      "failed": 0, "rejected": 0}

    # ------------------------------------------------------------------ public
    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        """Token ids of chat ``messages`` ([{role, content}]) with the template's assistant header.

        The same text and tokenisation as ``ZhyperModel.generate`` (add_special_tokens=False: the
        template holds its special tokens).
        """
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        """Requests in the running batch that have not finished."""
        return sum(row.live for row in list(self._batch.rows))

    def start(self) -> "Engine":
        if self.running:
            return self
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="zhyper-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current step, fail every waiting and running request, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def submit(self, request: Request) -> Request:
        return self.submit_many([request])[0]

    def submit_many(self, requests: Sequence[Request]) -> list[Request]:
        """Queue requests (all of them, or none when they do not fit); they join the batch at the next step."""
        for r in requests:
            self.check_prompt(len(r.prompt_ids), r.params.max_tokens)
        with self._cond:
            if not self.running or self._stopping:
                raise EngineStopped("the engine is not running; call start() first")
            if len(self._pending) + len(requests) > self.max_queue:
                self.stats["rejected"] += len(requests)
                raise QueueFull(f"{len(self._pending)} requests are waiting already (max_queue {self.max_queue}); "
                                "retry later")
            self._pending.extend(requests)
            self._cond.notify_all()
        return list(requests)

    def check_prompt(self, n_prompt: int, max_tokens: int) -> None:
        """Raise ValueError when a prompt of ``n_prompt`` tokens plus ``max_tokens`` exceeds the context."""
        if n_prompt < 1:
            raise ValueError("the prompt has no tokens; expected at least one message with content")
        if self.max_context is not None and n_prompt + max_tokens > self.max_context:
            raise ValueError(f"this model's maximum context length is {self.max_context} tokens; the request "
                             f"needs {n_prompt + max_tokens} ({n_prompt} in the messages, {max_tokens} in the "
                             "completion): shorten the messages or lower max_tokens")

    def resolve_max_tokens(self, n_prompt: int, max_tokens: int | None) -> int:
        """A request's max_tokens, or the default capped by what the context has left."""
        if max_tokens is not None:
            return max_tokens
        left = self.max_context - n_prompt if self.max_context is not None else self.default_max_tokens
        return max(1, min(self.default_max_tokens, left))

    def generate(self, prompts: Sequence[str], descriptions: Sequence, system: str = "",
                 timeout: float | None = None, weights: Sequence | None = None, combine: str = "modulation",
                 **params) -> list[dict]:
        """Library call: answer chat ``prompts`` (one description each; None = base) through the engine.

        A description may be a list of descriptions, with ``weights`` (parallel, None entries allowed)
        and ``combine`` as in ``ZhyperModel.generate`` (``zhyper.compose``). All requests are queued at
        once (so they share batches as HTTP requests would). ``params`` are SamplingParams fields
        (default: greedy, ``default_max_tokens``). Returns one dict per prompt: {text, finish_reason,
        usage}. Raises RuntimeError if a request failed.
        """
        from zhyper import compose
        from zhyper.generation import format_prompts

        if len(prompts) != len(descriptions) or (weights is not None and len(weights) != len(prompts)):
            raise ValueError(f"descriptions / weights: expected one per prompt ({len(prompts)}), got "
                             f"{len(descriptions)} / {None if weights is None else len(weights)}")
        weights = [None] * len(prompts) if weights is None else list(weights)
        if combine not in compose.COMBINE:
            raise ValueError(f"combine: expected one of {list(compose.COMBINE)}, got {combine!r}")
        if combine == "text":
            if any(w is not None for w in weights):
                raise ValueError("weights: combine='text' joins the descriptions into one sentence; weights apply "
                                 "to combine='modulation' only")
            descriptions = [_joined(d) for d in descriptions]
        params.setdefault("temperature", 0.0)
        texts = format_prompts(self.tokenizer, prompts, [_joined(d) or "" for d in descriptions], system)
        waiters = []
        for text, description, w in zip(texts, descriptions, weights):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            sp = SamplingParams(max_tokens=self.resolve_max_tokens(len(ids), params.get("max_tokens")),
                                **{k: v for k, v in params.items() if k != "max_tokens"})
            waiter = Waiter()
            description = description if description is None or isinstance(description, str) else tuple(description)
            w = None if w is None else (tuple(w) if isinstance(w, (list, tuple)) else (w,))
            waiters.append((Request(ids, description, sp, waiter, weights=w), waiter))
        self.submit_many([r for r, _ in waiters])
        return [w.result(timeout) for _, w in waiters]

    # ------------------------------------------------------------------ the loop
    def _reset_batch(self) -> None:
        self._release()
        self._batch = RunningBatch()

    def _hold(self, modulation) -> None:
        """Install the running batch's modulation for the coming steps (once per change of the batch)."""
        if self._held_mod is not modulation:
            self._release()
            stack = contextlib.ExitStack()
            stack.enter_context(self.model.conditioned(modulation))
            self._held, self._held_mod = stack, modulation

    def _release(self) -> None:
        """Restore the layers' modulation as it was before ``_hold`` (no batch is running)."""
        held, self._held, self._held_mod = self._held, None, None
        if held is not None:
            held.close()

    def _take(self) -> list[Request] | None:
        """Wait for work: the requests to admit now ([]: only step the running rows), None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                free = self.max_batch - len(self._batch)
                if self._pending and free > 0:
                    wait = self._pending[0].arrived + self.admit_window - time.monotonic()
                    if wait <= 0 or len(self._pending) >= free:
                        new = [self._pending.popleft() for _ in range(min(free, len(self._pending)))]
                        return [r for r in new if not r.cancelled]
                    if self._batch.rows:
                        return []  # the window is open: the running rows keep decoding meanwhile
                    self._cond.wait(wait)
                elif self._batch.rows:
                    return []
                else:
                    self._cond.wait()

    def _notify(self, kind: str, value) -> None:
        for listener in self.listeners:
            try:
                listener(kind, value)
            except Exception:  # metrics must never stop the batch
                logger.exception("engine listener failed on %s", kind)

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                new = self._take()
                if new is None:
                    break
                try:
                    if new:
                        self._admit(new)
                    self._drop_finished()
                    if self._batch.rows:
                        self._step()
                        self._drop_finished()
                except Exception as exc:  # a failed forward must not take the server down
                    self._fail_all(exc, new)
            with self._cond:
                rows = self._batch.rows
                leftover = [r.request for r in rows if not r.finished] + list(self._pending)
                self._pending.clear()
            self._reset_batch()  # the model released before any event goes out (as in _drop_finished)
            for row in rows:
                row.send_final()
            for request in leftover:
                send(request, Event("error", message="the server is shutting down", code="shutting_down", status=503))

    def _fail_all(self, exc: Exception, new: list[Request]) -> None:
        """A failed forward: every request it ran (the running rows and those being admitted) fails."""
        logger.exception("engine step failed; failing %d running requests", len(self._batch))
        rows = self._batch.rows
        self._reset_batch()  # the model released before any event goes out (as in _drop_finished)
        for row in rows:  # those that ended before the failure get their answer
            row.send_final()
        ended = {id(r.request) for r in rows if r.finished}
        failed = {id(r.request): r.request for r in rows if not r.finished}
        failed.update({id(r): r for r in new if id(r) not in ended})
        for request in failed.values():
            self.stats["failed"] += 1
            send(request, Event("error", message=f"generation failed: {type(exc).__name__}: {exc}",
                                code="generation_failed"))

    def _forward(self, ids, mask, pos, cache, last_only: bool):
        """The last position's logits (b, V) of one forward, with whatever modulation is installed."""
        kwargs = {self._cache_kw: cache, "use_cache": True}
        if last_only and self._keep_logits:
            kwargs["logits_to_keep"] = 1
        out = self.base(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs)
        return out.logits[:, -1, :]

    def _modulation_rows(self, requests: list[Request]) -> list:
        """One modulation row per request, or ``(message, code, status)`` where its own part fails.

        Every description of the admitted requests goes through the cache in one call (the misses in one
        encoder + hypernetwork batch); a combined request's row is then the weighted sum of its rows
        (``compose.weighted``), formed once here, so decoding costs the same as for any row.
        """
        flat = [t for r in requests for t in (r.texts or (None,))]
        cached = iter(self.cache.rows(flat, skip_non_finite=True))
        out = []
        for request in requests:
            mine = [next(cached) for _ in (request.texts or (None,))]
            bad = [t for t, m in zip(request.texts, mine) if m is None]
            if bad:
                out.append((f"the hypernetwork's modulation for description {quote(bad[0])} holds NaN or inf: this "
                            "checkpoint cannot serve it (a diverged or corrupted hypernetwork)",
                            "non_finite_modulation", 500))
            elif request.weights is None:
                out.append(mine[0])
            else:
                out.append(_combined(request, mine))
        return out

    def _new_rows(self, requests: list[Request]) -> tuple[list[Row], object]:
        """Rows and their batch modulation; a request whose own part fails is answered alone and left out."""
        rows, mods = [], []
        for request, mod in zip(requests, self._modulation_rows(requests)):
            if isinstance(mod, tuple):
                self._fail_request(request, *mod)
                continue
            try:
                rows.append(Row(request, self.tokenizer, self.device, self.stats))
            except Exception as exc:  # e.g. a seed the generator refuses
                self._fail_request(request, f"cannot start this request: {type(exc).__name__}: {exc}",
                                   "invalid_request", 400)
                continue
            mods.append(mod)
        return rows, (cat_rows(mods) if mods else None)

    def _fail_request(self, request: Request, message: str, code: str, status: int = 500) -> None:
        # the message quotes the description, which may be private: at DEBUG only
        logger.warning("request %s failed alone (%s, status %d)", request.name, code, status)
        logger.debug("request %s: %s", request.name, message)
        self.stats["failed"] += 1
        send(request, Event("error", message=message, code=code, status=status))

    def _fail(self, row: Row, message: str, code: str, status: int = 500) -> None:
        row.finished = True  # it leaves the batch before the next step; the other rows go on
        self._fail_request(row.request, message, code, status)

    def _prompts(self, requests: list[Request]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) (n, longest) of the prompts, left-padded."""
        n, longest = len(requests), max(len(r.prompt_ids) for r in requests)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, r in enumerate(requests):
            k = len(r.prompt_ids)
            ids[i, longest - k:] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, longest - k:] = 1
        return ids.to(self.device), mask.to(self.device)

    def _admit(self, requests: list[Request]) -> None:
        now = time.monotonic()
        self._notify("admit", [now - r.arrived for r in requests])
        rows, modulation = self._new_rows(requests)
        if not rows:
            return
        lengths = [len(row.request.prompt_ids) for row in rows]
        self.stats["prompt_tokens"] += sum(lengths)
        prefilled = []
        for piece in prefill_pieces(lengths, self.prefill_tokens):
            mine = [rows[i] for i in piece]
            mod = modulation if len(piece) == len(rows) else select_rows(modulation, torch.tensor(piece))
            cache, mask, tokens = self._prefill(mine, mod)
            for row, token in zip(mine, tokens.tolist()):  # first tokens out before the next piece's prefill
                self._accept(row, token)
            prefilled.append((mine, cache, mask, tokens, mod))
        for piece in prefilled:  # rows that finished on their first token leave at the next _drop_finished
            self._batch.merge(*piece)
        self.stats["peak_rows"] = max(self.stats["peak_rows"], len(self._batch))

    def _prefill(self, rows: list[Row], modulation):
        """One prefill forward of ``rows`` with their modulation rows: (their cache, mask, first tokens)."""
        ids, mask = self._prompts([row.request for row in rows])
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as HF generate does for left padding
        cache = new_cache(RunningBatch.room_for(rows))
        with self.model.conditioned(modulation):  # inside the running batch's held one, which it restores
            logits = self._forward(ids, mask, pos, cache, last_only=True)
        self.stats["prefills"] += 1
        return cache, mask, self._choose(logits, rows)

    def _step(self) -> None:
        batch = self._batch
        self._notify("step", len(batch))
        ids, mask, pos = batch.step_inputs()
        self._hold(batch.mod)
        logits = self._forward(ids, mask, pos, batch.kv, last_only=False)
        self.stats["steps"] += 1
        tokens = self._choose(logits, batch.rows)
        batch.advance(mask, tokens)
        for row, token in zip(batch.rows, tokens.tolist()):
            self._accept(row, token)

    def _choose(self, logits: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor:
        """Next token per row (``sampling.choose``); a row whose output is unusable fails alone."""
        tokens, failures = choose(logits, rows)
        for row, failure in failures:
            self._fail(row, *failure)
        return tokens

    def _accept(self, row: Row, token: int) -> None:
        if row.live:
            row.accept(token, self.eos_ids, self.max_context)

    def _drop_finished(self) -> None:
        """Rows that ended leave the batch; an empty batch restores the layers' modulation before the
        finish events go out (a caller woken by one may use the model straight away)."""
        done = [row for row in self._batch.rows if row.final is not None]
        self._batch.keep_live()
        if not self._batch.rows:
            self._release()
        for row in done:
            row.send_final()


def prefill_pieces(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Consecutive groups of row indices whose padded prompts (rows x longest) hold at most ``budget`` tokens;
    a prompt longer than the budget is a piece alone. ``budget`` None: one piece of every row."""
    if budget is None:
        return [list(range(len(lengths)))] if lengths else []
    pieces, longest = [], 0
    for i, n in enumerate(lengths):
        if pieces and max(longest, n) * (len(pieces[-1]) + 1) <= budget:
            pieces[-1].append(i)
            longest = max(longest, n)
        else:
            pieces.append([i])
            longest = n
    return pieces


def _combined(request: Request, rows: list):
    """The weighted sum of a request's description rows (duplicates add their weights, as the library does),
    or ``(message, code, status)`` when it cannot be formed."""
    from zhyper import compose

    if not isinstance(rows[0], torch.Tensor):  # the library's one message for full mode (compose.full_mode_refusal)
        return (compose.full_mode_refusal([(tuple(request.texts), tuple(request.weights))]), "invalid_request", 400)
    unique = list(dict.fromkeys(request.texts))
    matrix = torch.zeros(1, len(unique), dtype=torch.float64)
    for text, w in zip(request.texts, request.weights):
        matrix[0, unique.index(text)] += w
    stack = cat_rows([rows[request.texts.index(t)] for t in unique])
    row = compose.weighted(stack, matrix)
    if not bool(torch.isfinite(row).all()):
        return (f"the weighted sum of the modulations of {quote(request.description)} with weights "
                f"{list(request.weights)} overflows (inf or NaN): use smaller weights", "invalid_weights", 400)
    return row


def _joined(description):
    """A description, or a list of them as one text (``compose.as_text``); None stays None."""
    from zhyper import compose

    return description if description is None or isinstance(description, str) else compose.as_text((tuple(description), ()))


