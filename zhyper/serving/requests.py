"""What the engine's clients see: a request, how to decode it, the events it gets back, and the engine's errors.

Light on purpose (torch only for a sampled request's generator, in ``rows``): the HTTP schemas and routes
import the limits from here without loading the engine.

    SamplingParams   max_tokens, temperature (0 greedy), top_p, stop strings, seed, ignore_eos; checked on creation
    Request          prompt token ids, a description (or up to 8 combined with weights), params, a sink
    Event            what a sink receives: ``text`` pieces, then one ``finish`` or one ``error``
    Waiter           the sink of the blocking library call (``Engine.generate``)
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

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


def quote(description: str | tuple[str, ...] | None, limit: int = 120) -> str:
    if description is None:
        return "(none: the base model)"
    if not isinstance(description, str):
        return "[" + ", ".join(quote(d, limit) for d in description) + "]"
    return repr(description if len(description) <= limit else description[:limit] + "...")


def send(request: Request, event: Event) -> None:
    try:
        request.sink(event)
    except Exception:  # a broken consumer must not stop the batch
        logger.exception("request %s: its event sink raised", request.name)


class Waiter:
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
