"""A Zhyper checkpoint as an lm-evaluation-harness model: ``ZhyperLM``, registered as ``"zhyper"``.

``ZhyperLM`` is lm-eval's own Hugging Face model class (``HFLM``) around the checkpoint's base model
(ZLinear injected): batching, truncation, loglikelihood, rolling loglikelihood and generation are
lm-eval's. The only thing added is the conditioning: every forward pass and every ``generate`` call
runs inside ``ZhyperModel.conditioned(m)`` with the modulation ``m`` of one description (or a weighted
combination, ``zhyper.compose``'s spelling), computed once; ``description=None`` runs the plain base
model (``adapters_off``). ``condition(...)`` switches it between evaluations without reloading::

    from lm_eval import simple_evaluate
    from zhyper.evaluation.harness import ZhyperLM

    lm = ZhyperLM(checkpoint="runs/default/final", description="Answer in all capital letters.")
    simple_evaluate(model=lm, tasks=["piqa"])
    lm.condition(None)                                   # the base model, same object
    lm.condition(["Be brief.", "Use bullets."], weights=[0.5, 1.0])

By name (``simple_evaluate(model="zhyper", model_args={...})``, or lm-eval's command line) once this
module is imported; lm-eval 0.4 has no plugin entry point for models, so ``python -m
zhyper.evaluation.harness run --model zhyper --model_args checkpoint=DIR,description_file=F ...`` runs
lm-eval's own command line with the model registered. On the command line ``description_file`` (one
description per line, combined) avoids lm-eval's comma-separated ``--model_args``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM


def read_description_file(path: str | Path) -> list[str]:
    """The descriptions of a text file, one per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"description_file {path}: no such file; expected a text file with one "
                                "description per line")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"description_file {path}: no description in it (expected one per line)")
    return lines


def _as_weights(weights):
    """``weights`` from Python (a number or a list) or from lm-eval's ``--model_args`` (``"0.5|1"``)."""
    if isinstance(weights, str):
        try:
            return [float(w) for w in weights.split("|")]
        except ValueError:
            raise ValueError(f"weights: expected numbers separated by '|', got {weights!r}") from None
    return weights


@register_model("zhyper")
class ZhyperLM(HFLM):
    """lm-eval's ``HFLM`` on a Zhyper checkpoint's base model, conditioned on one description.

    checkpoint: a ``save_pretrained`` folder (or pass ``model``, an already loaded ``ZhyperModel``).
    description: a string, a list of strings (combined by ``combine``), or None for adapters off.
    description_file: instead of ``description``, a text file with one description per line.
    weights / combine: as ``ZhyperModel.modulation`` (the strength dial, several contexts).
    base: the base model path or hub id (default: the one recorded in the checkpoint).
    Every other keyword goes to ``HFLM`` (``batch_size``, ``max_length``, ``device``, ...).
    """

    def __init__(self, checkpoint: str | None = None, model=None, description: str | Sequence[str] | None = None,
                 description_file: str | None = None, weights=None, combine: str = "modulation",
                 base: str | None = None, device: str = "cpu", batch_size: int | str = 8, **kwargs):
        if (checkpoint is None) == (model is None):
            raise ValueError("ZhyperLM: expected exactly one of checkpoint= (a zhyper checkpoint folder) or model= "
                             "(a loaded ZhyperModel)")
        if description is not None and description_file is not None:
            raise ValueError("ZhyperLM: give description= or description_file=, not both")
        if model is None:
            from zhyper.model import ZhyperModel

            model = ZhyperModel.from_pretrained(checkpoint, base_model=base)
        if model.tokenizer is None:
            raise ValueError("ZhyperLM: the ZhyperModel has no tokenizer; load it with from_pretrained or pass "
                             "tokenizer= to from_base")
        model.eval()
        super().__init__(pretrained=model.base, tokenizer=model.tokenizer, device=device, batch_size=batch_size,
                         **kwargs)
        self.zhyper = model
        self.checkpoint = str(checkpoint or model.checkpoint_folder or "")
        if description_file is not None:
            description = read_description_file(description_file)
        self.condition(description, weights=_as_weights(weights), combine=combine)

    def condition(self, description: str | Sequence[str] | None, weights=None, combine: str = "modulation") -> None:
        """Condition every later request on ``description`` (None: adapters off, the base model exactly).

        The modulation is computed here, once, and checked finite (a NaN/inf modulation is an error
        naming the description, never a silent score)."""
        if description is None:
            if weights is not None:
                raise ValueError("weights: given without a description (description=None is the base model)")
            self.description, self.weights, self._modulation = None, None, None
            return
        entry = description if isinstance(description, str) else list(description)
        given = None if weights is None else [weights]
        self._modulation = self.zhyper.modulation([entry], weights=given, combine=combine, check_finite=True)
        self.description, self.weights = description, weights

    def adapters_off(self) -> None:
        """The plain base model for every later request (same as ``condition(None)``)."""
        self.condition(None)

    @contextmanager
    def _conditioning(self, batch: int):
        """The block runs with this LM's modulation on each of ``batch`` rows (or with adapters off)."""
        if self._modulation is None:
            with self.zhyper.adapters_off():
                yield
            return
        m = self._modulation
        rows = ({k: v.expand(batch, *v.shape[1:]) for k, v in m.items()} if isinstance(m, dict)
                else m.expand(batch, *m.shape[1:]))
        with self.zhyper.conditioned(rows):
            yield

    def _model_call(self, inps, attn_mask=None, labels=None):
        with self._conditioning(inps.shape[0]):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        with self._conditioning(context.shape[0]):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def get_model_info(self) -> dict:
        """What lm-eval records in its results' ``config`` (no hub lookup: the checkpoint names the base)."""
        return {"model_num_parameters": sum(p.numel() for p in self.zhyper.base.parameters()),
                "model_dtype": str(next(self.zhyper.base.parameters()).dtype),
                "zhyper_checkpoint": self.checkpoint, "zhyper_description": self.description,
                "zhyper_weights": self.weights, "zhyper_base": self.zhyper.base_model_id}


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's own command line (``lm-eval run ...``) with ``--model zhyper`` registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = ["lm-eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
