"""``zhyper serve``: an OpenAI-compatible HTTP server where every request brings its own description.

All contexts share the LoRA factors A and B; a context costs only its modulation (r numbers per
layer for diag). So requests with different descriptions run as rows of one forward batch, each row
with its own modulation, at the base model's cost.

- ``engine.Engine``: the batching engine (a thread with a hand-written decode loop over the HF
  model's KV cache; requests join the running batch between steps and leave it when they finish),
  with its parts ``requests`` (Request, SamplingParams, Event), ``rows`` (one row's answer text),
  ``kv`` (the running batch's tensors, a KV cache written in place) and ``sampling`` (the next token);
- ``cache.ModulationCache``: LRU from description text to modulation (the encoder and the
  hypernetwork run once per distinct description);
- ``contexts``: the named contexts a checkpoint answers to as ``model: "zhyper:<name>"``;
- ``schemas``: the OpenAI request schema and response / error bodies;
- ``app``: the FastAPI application and ``serve`` (uvicorn).

Nothing heavy is imported here: fastapi, uvicorn and transformers load with the submodules.
"""

from __future__ import annotations

from zhyper._lazy import lazy_exports

_LAZY = {
    "Engine": "zhyper.serving.engine",
    "SamplingParams": "zhyper.serving.requests",
    "ModulationCache": "zhyper.serving.cache",
    "load_contexts": "zhyper.serving.contexts",
    "save_contexts": "zhyper.serving.contexts",
    "create_app": "zhyper.serving.app",
    "serve": "zhyper.serving.app",
    "BackgroundServer": "zhyper.serving.app",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
