"""The batching engine: one thread, one decode loop, every request a row with its own modulation.

Requests wait in a bounded queue (``submit`` raises ``QueueFull`` past ``max_queue``). Before every
decode step the loop admits waiting requests up to ``max_batch`` rows (continuous batching). With an
admission window (``admit_window`` seconds), a waiting request is admitted once the oldest waiting
one has waited that long or the free rows are all claimed, so requests arriving a few milliseconds
apart share one prefill; the running rows keep decoding while the window is open.

    admit   prompts of the new rows, left-padded to their longest, one forward with their
            modulation rows into a fresh DynamicCache -> each row's first token;
            merged into the running batch: KV tensors and the attention mask left-padded to the
            longer of the two, then concatenated along the batch dimension
    step    one token for every row: input (b, 1), attention mask (b, T + 1), explicit position
            ids (each row's own count of real tokens, so padding never shifts RoPE), the batch's
            modulation (b, L, T, *shape) set on every ZLinear for the forward
    leave   rows that finished (end of turn, a stop string, max_tokens, cancelled) are dropped from
            the KV cache, the mask, the positions and the modulation at once; mask columns that
            are padding for every remaining row are cut off the front of the cache

A finished row's response completes at once; it never waits for the longest row. Padding slots hold
zero keys/values and are masked, so a row's tokens are those it would get alone, up to
floating-point summation order (greedy rows equal ``ZhyperModel.generate``; tests check it).

Each request gets events through its ``sink`` (called on the engine thread; keep it cheap):
``Event("text", text=...)`` for new answer text, then exactly one ``Event("finish", ...)`` with
the whole answer, the finish reason and the token usage, or ``Event("error", message=..., code=...,
status=...)``.

Fault isolation: a request whose own part fails (its modulation or its logits are not finite, its
logits are constant because its activations overflowed, its sampling raises) gets its error alone and leaves the batch; the other rows go on with the tokens they
would get alone. Sampling is computed in float64 on ``(logits - max) / temperature``, whose largest
entry is exactly 0, so no temperature > 0 can produce inf or NaN. Only a failed forward fails the
rows it ran.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


from .cache import ModulationCache, cat_rows, select_rows
from .logsafe import safe_logger

logger = safe_logger(__name__)


class QueueFull(RuntimeError):
    """The engine's waiting queue holds ``max_queue`` requests already."""


class EngineStopped(RuntimeError):
    """The engine is not running (never started, or stopped)."""


SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1  # what torch.Generator.manual_seed takes


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request. temperature 0 is greedy (argmax); top_p 1 keeps every token."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.temperature, bool) or isinstance(self.top_p, bool):
            raise ValueError(f"temperature / top_p: expected numbers, got {self.temperature!r} / {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not SEED_MIN <= int(self.seed) <= SEED_MAX):
            raise ValueError(f"seed: expected an integer in [{SEED_MIN}, {SEED_MAX}], got {self.seed!r}")
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected an int >= 1, got {self.max_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ValueError(f"temperature: expected a number in [0, 2], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p: expected a number in (0, 1], got {self.top_p!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop: expected a tuple of non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Event:
    """What the engine tells a request: ``text`` (a new piece of the answer), ``finish`` or ``error``."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    message: str | None = None
    code: str | None = None  # error events: what failed (generation_failed, non_finite_output, ...)
    status: int = 500  # error events: the HTTP status it maps to


_ids = itertools.count(1)


MAX_DESCRIPTIONS = 8  # most descriptions one request may combine


@dataclass(eq=False)
class Request:
    """One generation: prompt token ids, a description (None: the base model), how to decode, where to report.

    ``description`` may be a list (tuple) of descriptions, combined as the weighted sum of their
    modulation rows (``zhyper.compose``: weights default to 1/n; ``weights`` is parallel, one finite
    number per description). The combination is formed once, at admission, from the cached rows.
    """

    prompt_ids: list[int]
    description: str | tuple[str, ...] | None
    params: SamplingParams
    sink: Callable[[Event], None]
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)  # when it was created (queue wait, admission window)
    weights: tuple[float, ...] | None = None
    tag: str | None = None  # how the log names it (the server's request id); None: its number

    def __post_init__(self):
        if self.description is None or (isinstance(self.description, str) and self.weights is None):
            if self.weights is not None:
                raise ValueError("weights: expected None for a request without a description")
            return
        from zhyper import compose

        texts = (self.description,) if isinstance(self.description, str) else self.description
        if not isinstance(texts, (list, tuple)) or not 1 <= len(texts) <= MAX_DESCRIPTIONS:
            raise ValueError(f"description: expected a string or a list of 1 to {MAX_DESCRIPTIONS} strings, got "
                             f"{self.description!r}")
        [(texts, weights)] = compose.entries([list(texts)], None if self.weights is None else [list(self.weights)])
        self.description, self.weights = tuple(texts), weights

    @property
    def texts(self) -> tuple[str, ...]:
        """The descriptions whose modulation rows this request needs (none for the base model)."""
        if self.description is None:
            return ()
        return (self.description,) if isinstance(self.description, str) else self.description

    @property
    def name(self) -> str:
        return self.tag or str(self.id)

    def cancel(self) -> None:
        """Ask the engine to drop this request (it leaves the batch before the next step)."""
        self.cancelled = True


class _Detokenizer:
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


class _Row:
    """A request while it is in the running batch."""

    def __init__(self, request: Request, tokenizer, device: torch.device):
        self.request = request
        self.params = request.params
        self.detok = _Detokenizer(tokenizer)
        self.n_generated = 0
        self.emitted = 0  # characters of detok.text already sent
        self.finished = False
        self.generator = None
        if not self.params.greedy and self.params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(int(self.params.seed))


def _stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that could be the start of a stop string (not sent yet)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class Engine:
    """Continuous batching over a ZhyperModel with one modulation row per request.

    Args:
        model: a ZhyperModel with a tokenizer (put in eval mode).
        max_batch: most rows decoded together.
        max_queue: most requests waiting to be admitted; ``submit`` raises ``QueueFull`` beyond.
        cache_size: entries of the description -> modulation LRU (0 disables it).
        default_max_tokens: max_tokens of a request that sets none (capped by the context length).
        admit_window: seconds a waiting request may wait for others to share its prefill (0: none).
    """

    def __init__(self, model, max_batch: int = 32, max_queue: int = 256, cache_size: int = 1024,
                 default_max_tokens: int = 256, admit_window: float = 0.0):
        for name, value, low in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1),
                                 ("default_max_tokens", default_max_tokens, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if isinstance(admit_window, bool) or not isinstance(admit_window, (int, float)) or not 0 <= admit_window <= 10:
            raise ValueError(f"admit_window: expected seconds in [0, 10], got {admit_window!r}")
        self.admit_window = float(admit_window)
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
        return sum(not (r.finished or r.request.cancelled) for r in list(self._rows))

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
            waiter = _Waiter()
            description = description if description is None or isinstance(description, str) else tuple(description)
            w = None if w is None else (tuple(w) if isinstance(w, (list, tuple)) else (w,))
            waiters.append((Request(ids, description, sp, waiter, weights=w), waiter))
        self.submit_many([r for r, _ in waiters])
        return [w.result(timeout) for _, w in waiters]

    # ------------------------------------------------------------------ the loop
    def _reset_batch(self) -> None:
        self._rows: list[_Row] = []
        self._kv = None  # DynamicCache of the running rows
        self._mask = None  # (b, T) long: 1 real token, 0 padding
        self._pos = None  # (b,) position id of each row's next input token
        self._last = None  # (b,) each row's next input token
        self._mod = None  # modulation of the running rows

    def _take(self) -> list[Request] | None:
        """Wait for work: the requests to admit now ([]: only step the running rows), None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                free = self.max_batch - len(self._rows)
                if self._pending and free > 0:
                    wait = self._pending[0].arrived + self.admit_window - time.monotonic()
                    if wait <= 0 or len(self._pending) >= free:
                        new = [self._pending.popleft() for _ in range(min(free, len(self._pending)))]
                        return [r for r in new if not r.cancelled]
                    if self._rows:
                        return []  # the window is open: the running rows keep decoding meanwhile
                    self._cond.wait(wait)
                elif self._rows:
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
                    if self._rows:
                        self._step()
                        self._drop_finished()
                except Exception as exc:  # a failed forward must not take the server down
                    logger.exception("engine step failed; failing %d running requests", len(self._rows))
                    failed = {id(r.request): r.request for r in self._rows}
                    failed.update({id(r): r for r in new})
                    for request in failed.values():
                        self.stats["failed"] += 1
                        _send(request, Event("error", message=f"generation failed: {type(exc).__name__}: {exc}",
                                             code="generation_failed"))
                    self._reset_batch()
        with self._cond:
            leftover = [r.request for r in self._rows if not r.finished] + list(self._pending)
            self._pending.clear()
        for request in leftover:
            _send(request, Event("error", message="the server is shutting down", code="shutting_down", status=503))
        self._reset_batch()

    def _forward(self, ids, mask, pos, cache, modulation, last_only: bool):
        kwargs = {self._cache_kw: cache, "use_cache": True}
        if last_only and self._keep_logits:
            kwargs["logits_to_keep"] = 1
        with self.model.conditioned(modulation):
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
                out.append((f"the hypernetwork's modulation for description {_quote(bad[0])} holds NaN or inf: this "
                            "checkpoint cannot serve it (a diverged or corrupted hypernetwork)",
                            "non_finite_modulation", 500))
            elif request.weights is None:
                out.append(mine[0])
            else:
                out.append(_combined(request, mine))
        return out

    def _new_rows(self, requests: list[Request]) -> tuple[list[_Row], object]:
        """Rows and their batch modulation; a request whose own part fails is answered alone and left out."""
        rows, mods = [], []
        for request, mod in zip(requests, self._modulation_rows(requests)):
            if isinstance(mod, tuple):
                self._fail_request(request, *mod)
                continue
            try:
                rows.append(_Row(request, self.tokenizer, self.device))
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
        _send(request, Event("error", message=message, code=code, status=status))

    def _fail(self, row: _Row, message: str, code: str, status: int = 500) -> None:
        row.finished = True  # it leaves the batch before the next step; the other rows go on
        self._fail_request(row.request, message, code, status)

    def _admit(self, requests: list[Request]) -> None:
        from transformers import DynamicCache

        now = time.monotonic()
        self._notify("admit", [now - r.arrived for r in requests])
        rows, modulation = self._new_rows(requests)
        if not rows:
            return
        requests = [row.request for row in rows]
        self.stats["prompt_tokens"] += sum(len(r.prompt_ids) for r in requests)
        n, longest = len(requests), max(len(r.prompt_ids) for r in requests)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, r in enumerate(requests):
            k = len(r.prompt_ids)
            ids[i, longest - k:] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, longest - k:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as HF generate does for left padding
        cache = DynamicCache()
        logits = self._forward(ids, mask, pos, cache, modulation, last_only=True)
        self.stats["prefills"] += 1
        tokens = self._choose(logits, rows)
        self._merge(rows, cache, mask, mask.sum(-1), tokens, modulation)
        for row, token in zip(rows, tokens.tolist()):
            self._accept(row, token)

    def _merge(self, rows, cache, mask, pos, last, modulation) -> None:
        if not self._rows:
            self._rows, self._kv, self._mask, self._pos, self._last, self._mod = rows, cache, mask, pos, last, modulation
        else:
            t_old, t_new = self._mask.shape[1], mask.shape[1]
            t = max(t_old, t_new)
            for old, new in zip(self._kv.layers, cache.layers):
                old.keys = torch.cat([_left_pad(old.keys, t, -2), _left_pad(new.keys, t, -2)], dim=0)
                old.values = torch.cat([_left_pad(old.values, t, -2), _left_pad(new.values, t, -2)], dim=0)
            self._mask = torch.cat([_left_pad(self._mask, t, -1), _left_pad(mask, t, -1)], dim=0)
            self._pos = torch.cat([self._pos, pos])
            self._last = torch.cat([self._last, last])
            self._mod = cat_rows([self._mod, modulation])
            self._rows = self._rows + rows
        self.stats["peak_rows"] = max(self.stats["peak_rows"], len(self._rows))

    def _step(self) -> None:
        b = len(self._rows)
        self._notify("step", b)
        mask = torch.cat([self._mask, self._mask.new_ones(b, 1)], dim=1)
        logits = self._forward(self._last[:, None], mask, self._pos[:, None], self._kv, self._mod, last_only=False)
        self._mask, self._pos = mask, self._pos + 1
        self.stats["steps"] += 1
        self._last = self._choose(logits, self._rows)
        for row, token in zip(self._rows, self._last.tolist()):
            self._accept(row, token)

    def _choose(self, logits: torch.Tensor, rows: Sequence[_Row]) -> torch.Tensor:
        """Next token per row: argmax for greedy rows, temperature / top-p sampling for the others.

        A row whose logits are not finite or constant (every token equally likely: what a final norm
        gives when the activations overflowed float32), or whose sampling raises, fails alone.
        """
        # amax / amin propagate NaN and carry ±inf, so checking the two per row replaces a pass over every logit
        high, low = logits.amax(-1), logits.amin(-1)
        finite = (torch.isfinite(high) & torch.isfinite(low) & (high > low)).tolist()
        tokens = logits.argmax(-1)
        for i, row in enumerate(rows):
            if row.finished or row.request.cancelled:
                continue
            if not finite[i]:
                self._fail(row, *_non_finite(row.request))
            elif not row.params.greedy:
                try:
                    tokens[i] = _sample(logits[i], row.params, row.generator)
                except Exception as exc:
                    logger.exception("request %s: sampling failed", row.request.name)
                    self._fail(row, f"sampling failed for this request ({type(exc).__name__}: {exc}); the other "
                               "requests were not affected", "sampling_failed")
        return tokens

    def _accept(self, row: _Row, token: int) -> None:
        """Add one token to a row: send new text, finish on end of turn / stop string / max_tokens."""
        if row.finished or row.request.cancelled:
            return
        p = row.params
        row.n_generated += 1
        self.stats["tokens"] += 1
        if token in self.eos_ids and not p.ignore_eos:
            return self._finish(row, "stop")
        row.detok.add(token)
        text = row.detok.text
        if p.stop:
            start = max(0, row.emitted - max(len(s) for s in p.stop))
            hits = [i for i in (text.find(s, start) for s in p.stop) if i >= 0]
            if hits:
                return self._finish(row, "stop", text[:min(hits)])
        if row.n_generated >= p.max_tokens:
            return self._finish(row, "length")
        if self.max_context is not None and len(row.request.prompt_ids) + row.n_generated >= self.max_context:
            return self._finish(row, "length")
        end = len(text) - _stop_holdback(text, p.stop) if p.stop else len(text)
        if end > row.emitted:
            _send(row.request, Event("text", text=text[row.emitted:end]))
            row.emitted = end

    def _finish(self, row: _Row, reason: str, text: str | None = None) -> None:
        if text is None:
            text = row.detok.full()  # exactly tokenizer.decode of the answer (what HF generate users get)
        sent = row.detok.text[:row.emitted]
        if len(text) > row.emitted and text.startswith(sent):
            _send(row.request, Event("text", text=text[row.emitted:]))
        row.finished = True
        self.stats["finished"] += 1
        n_prompt = len(row.request.prompt_ids)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": row.n_generated,
                 "total_tokens": n_prompt + row.n_generated}
        _send(row.request, Event("finish", text=text, finish_reason=reason, usage=usage))

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not (row.finished or row.request.cancelled)]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._mask, self._pos, self._last = self._mask[index], self._pos[index], self._last[index]
        self._mod = select_rows(self._mod, index)
        first = int(torch.nonzero(self._mask.any(0))[0, 0])  # columns before it are padding in every row
        for layer in self._kv.layers:
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]
        self._mask = self._mask[:, first:]


def _sample(logits: torch.Tensor, params: SamplingParams, generator) -> torch.Tensor:
    """One token from a row's finite logits (V,): float64, max-shifted before dividing by the temperature,
    so the largest score is exactly 0 at any temperature > 0 (tiny ones give -inf elsewhere: argmax)."""
    scores = logits.double()
    scores = (scores - scores.max()) / float(params.temperature)
    if params.top_p < 1.0:
        from transformers.generation.logits_process import TopPLogitsWarper

        empty = torch.empty((1, 0), dtype=torch.long, device=logits.device)
        scores = TopPLogitsWarper(float(params.top_p))(empty, scores[None])[0]
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[0]


def _combined(request: Request, rows: list):
    """The weighted sum of a request's description rows (duplicates add their weights, as the library does),
    or ``(message, code, status)`` when it cannot be formed."""
    from zhyper import compose

    if not isinstance(rows[0], torch.Tensor):
        return ("combining descriptions as a weighted sum of modulations needs a diag or square checkpoint; this "
                "one is full mode: send combine='text'", "invalid_request", 400)
    unique = list(dict.fromkeys(request.texts))
    matrix = torch.zeros(1, len(unique), dtype=torch.float64)
    for text, w in zip(request.texts, request.weights):
        matrix[0, unique.index(text)] += w
    stack = cat_rows([rows[request.texts.index(t)] for t in unique])
    row = compose.weighted(stack, matrix)
    if not bool(torch.isfinite(row).all()):
        return (f"the weighted sum of the modulations of {_quote(request.description)} with weights "
                f"{list(request.weights)} overflows (inf or NaN): use smaller weights", "invalid_weights", 400)
    return row


def _joined(description):
    """A description, or a list of them as one text (``compose.as_text``); None stays None."""
    from zhyper import compose

    return description if description is None or isinstance(description, str) else compose.as_text((tuple(description), ()))


def _quote(description: str | tuple[str, ...] | None, limit: int = 120) -> str:
    if description is None:
        return "(none: the base model)"
    if not isinstance(description, str):
        return "[" + ", ".join(_quote(d, limit) for d in description) + "]"
    return repr(description if len(description) <= limit else description[:limit] + "...")


def _non_finite(request: Request) -> tuple[str, str, int]:
    """(message, code, status) of a row whose output is not finite: the request's weights when they amplify
    (their magnitudes sum past 1, so the row leaves the span of its descriptions' own rows), else the checkpoint."""
    weights = request.weights
    if weights is not None and sum(abs(w) for w in weights) > 1 + 1e-6:
        return (f"the modulation of {_quote(request.description)} weighted by {list(weights)} overflows the base "
                "model's activations (its output is NaN or inf): use smaller weights (magnitudes summing to 1 "
                "at most stay within the descriptions' own modulations)", "invalid_weights", 400)
    return _non_finite_output(request.description), "non_finite_output", 500


def _non_finite_output(description: str | None) -> str:
    if description is None:
        return ("the base model's output for this prompt is not finite (NaN or inf) or carries no information "
                "(every token equally likely); nothing is returned")
    return (f"the model's output for description {_quote(description)} is not finite (NaN or inf) or carries no "
            "information (every token equally likely): the checkpoint's modulation for it overflows the base "
            "model's activations (a diverged or corrupted hypernetwork); refused rather than answering with an "
            "empty text")


def _left_pad(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros in front of ``x`` along ``dim`` up to ``length``."""
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _send(request: Request, event: Event) -> None:
    try:
        request.sink(event)
    except Exception:  # a broken consumer must not stop the batch
        logger.exception("request %s: its event sink raised", request.name)


class _Waiter:
    """A sink that collects one request's answer for the blocking library call."""

    def __init__(self):
        self._done = threading.Event()
        self._result: dict | None = None
        self._error: str | None = None
        self.started = time.perf_counter()
        self.first_text: float | None = None

    def __call__(self, event: Event) -> None:
        if event.kind == "text" and self.first_text is None:
            self.first_text = time.perf_counter()
        elif event.kind == "finish":
            self._result = {"text": event.text, "finish_reason": event.finish_reason, "usage": event.usage}
            self._done.set()
        elif event.kind == "error":
            self._error = event.message
            self._done.set()

    def result(self, timeout: float | None = None) -> dict:
        if not self._done.wait(timeout):
            raise TimeoutError(f"no answer within {timeout} s")
        if self._error is not None:
            raise RuntimeError(self._error)
        return self._result
