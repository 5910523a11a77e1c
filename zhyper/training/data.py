"""The data side of a run: the contexts, the training rows and descriptions, the sampler, the embeddings.

Training rows are the ``train`` split, plus, with ``data.null_context``, a pseudo-context
``NULL_CONTEXT`` whose rows pair every training prompt with its plain answer and whose
descriptions are random strings and unrelated sentences (the ``train`` pool of
``zhyper.data.controls``; evaluation draws from the disjoint ``eval`` pool). With
``data.augment: n`` each training description gets n generic rewordings
(``zhyper.data.augment``). Every description a run can meet (training, held-out, paraphrases,
controls) is embedded once, before the base model loads; training looks rows up in that table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

NULL_CONTEXT = "_null"
NULL_STRINGS = 240  # random strings in the training null pool (plus the 60 unrelated training sentences)


def load_data(cfg):
    """The ContextData of ``cfg.data`` (restricted to ``data.contexts`` when given)."""
    from zhyper import data as zdata

    if cfg.data.source == "builtin":
        data = zdata.builtin_suite(seed=cfg.data.seed)
    elif cfg.data.source == "ifeval":
        from zhyper.data.ifeval import load_ifeval, read_answers, training_prompts
        from zhyper.generation import plain_answers

        answers = (read_answers(cfg.data.path) if cfg.data.path  # default: the base model's own, cached
                   else plain_answers(cfg.base_model, training_prompts()))
        data = load_ifeval(answers, seed=cfg.data.seed, pairs=cfg.data.pairs)
    elif cfg.data.source == "askx":
        data = zdata.load_askx(cfg.data.path, setting=cfg.data.setting, drop_system_message=cfg.data.drop_system_message)
    else:
        data = zdata.load_tasks(cfg.data.path, data_files=cfg.data.data_files, skip_bad_rows=cfg.data.skip_bad_rows,
                                split_file=cfg.data.split_file, datasets_dir=cfg.data.datasets_dir,
                                contexts=cfg.data.contexts or None)
    return data.restrict(cfg.data.contexts) if cfg.data.contexts else data


def training_rows(data, null_context: bool, augment: int, seed: int):
    """(rows Dataset, {context: training descriptions}) with the null pseudo-context and augmentation."""
    from datasets import concatenate_datasets

    from zhyper.data.augment import augment_descriptions

    rows = data.split("train")
    descriptions = {c: augment_descriptions(d, augment, seed, c) if augment else list(d)
                    for c, d in data.descriptions.items()}
    if null_context:
        own = {"description": ""} if "description" in rows.column_names else {}  # null rows draw from the pool
        rows = concatenate_datasets([rows, null_rows(rows, **own)])
        descriptions[NULL_CONTEXT] = null_pool(seed)
    return rows, descriptions


def null_pool(seed: int) -> list[str]:
    """The null pseudo-context's training descriptions: random strings and unrelated sentences (``train`` pool)."""
    from zhyper.data.controls import random_strings, unrelated_sentences

    return random_strings(NULL_STRINGS, "train", seed) + unrelated_sentences("train")


def null_rows(rows, **columns):
    """One row per distinct (prompt, system) of ``rows``, context ``NULL_CONTEXT``, its plain answer
    (column ``base_answer``) as the response; ``columns``: values set on every null row (e.g. description="")."""
    if "base_answer" not in rows.column_names:
        raise ValueError("data.null_context needs a plain answer per prompt (column base_answer); this data has "
                         f"columns {rows.column_names}")
    systems = rows["system"] if "system" in rows.column_names else [""] * len(rows)
    first: dict[tuple[str, str], int] = {}
    for i, key in enumerate(zip(rows["prompt"], systems)):
        first.setdefault(key, i)
    return rows.select(sorted(first.values())).map(  # one row per training prompt, its plain answer
        lambda r: {"context": NULL_CONTEXT, "response": r["base_answer"], **columns})


@dataclass
class DescriptionTable:
    """Every description of a run, embedded once: ``table(descriptions)`` is (n, d_c) on ``device``."""

    vectors: torch.Tensor
    row_of: dict[str, int]

    @classmethod
    def build(cls, encoder, texts, device) -> "DescriptionTable":
        unique = sorted(set(texts))
        return cls(encoder.encode(unique).to(device), {d: i for i, d in enumerate(unique)})

    def __call__(self, descriptions) -> torch.Tensor:
        try:
            return self.vectors[[self.row_of[d] for d in descriptions]]
        except KeyError as err:
            raise KeyError(f"description {err.args[0]!r} was not embedded before training") from None


@dataclass
class RunData:
    """What the loop and the evaluation read: the contexts, the training rows, the sampler, the table."""

    data: object  # ContextData
    rows: object  # the training Dataset (with the null pseudo-context when asked)
    descriptions: dict[str, list[str]]
    sampler: object  # MixedContextSampler
    table: DescriptionTable
    center: torch.Tensor | None  # (n, d_c): the seen contexts' training descriptions; their mean is the centre


def prepare_data(cfg, rank: int, world: int, device) -> RunData:
    """Load the contexts, build the training rows and sampler, embed every description once.

    Runs before the base model loads: under ZeRO-3 anything loaded later is partitioned, the encoder too.
    """
    from zhyper.data import MixedContextSampler
    from zhyper.data.controls import control_descriptions
    from zhyper.hyper.encoder import ContextEncoder

    data = load_data(cfg)
    rows, descriptions = training_rows(data, cfg.data.null_context, cfg.data.augment, cfg.data.seed)
    sampler = MixedContextSampler(rows, descriptions, n_contexts=cfg.data.n_contexts, k=cfg.data.k,
                                  seed=cfg.data.seed, rank=rank, world_size=world)
    texts = {d for pool in (descriptions, data.heldout_descriptions, data.paraphrases) for ds in pool.values()
             for d in ds}
    texts |= {t for _, t in control_descriptions(cfg.eval.controls, "eval")} | {"none"}
    if "description" in data.examples.column_names:  # rows with a description of their own (ifeval, pairs)
        texts |= {d for d in data.examples.unique("description") if d}
    encoder = ContextEncoder(cfg.model.encoder, pooling=cfg.model.encoder_pooling)
    table = DescriptionTable.build(encoder, texts, device)
    center = None
    if cfg.train.center_contexts and cfg.method == "zhyper":  # the seen contexts' training descriptions, fp32
        seen = [d for c in sorted(data.descriptions) for d in data.descriptions[c]]
        center = table(seen).float().cpu()
    log.info("%d seen + %d unseen contexts, %d training rows, %d descriptions embedded", len(data.seen_contexts),
             len(data.unseen_contexts), len(rows), len(table.row_of))
    return RunData(data, rows, descriptions, sampler, table, center)
