"""The paper's hierarchical batch sampler: n distinct contexts x k examples, one description per example.

The global batch of step s is a pure function of (seed, s): ``numpy.random.default_rng([seed, s])``
draws n contexts without replacement, k distinct rows of each, and one training description per
row. The global list (context-major, length n*k) is cut into ``world_size`` contiguous shares;
rank r takes share r, so ranks never overlap within a step. Resuming only needs the step counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from datasets import Dataset


class MixedContextSampler:
    """Draws this rank's share of each step's mixed-context batch.

    examples: one split's Dataset with a ``context`` column.
    descriptions: {context: [training descriptions]}; every context in ``examples`` needs some.
    n_contexts: distinct contexts per global batch; k: examples per context.
    world_size must divide n_contexts * k; rank in [0, world_size).
    """

    def __init__(self, examples: "Dataset", descriptions: Mapping[str, Sequence[str]], n_contexts: int, k: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        for name, value in (("n_contexts", n_contexts), ("k", k), ("world_size", world_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in [0, {world_size}), got {rank!r}")
        if (n_contexts * k) % world_size:
            raise ValueError(f"world_size: must divide n_contexts*k = {n_contexts * k}, got {world_size}")
        if "context" not in examples.column_names:
            raise ValueError(f"examples: missing column 'context'; got {examples.column_names}")
        rows: dict[str, list[int]] = {}
        for i, c in enumerate(examples["context"]):
            rows.setdefault(c, []).append(i)
        no_desc = sorted(c for c in rows if not descriptions.get(c))
        if no_desc:
            raise ValueError(f"descriptions: contexts {no_desc} have examples but no training descriptions")
        few = {c: len(r) for c, r in rows.items() if len(r) < k}
        if few:
            raise ValueError(f"k: every context needs at least k={k} examples; these have fewer: {few}")
        if n_contexts > len(rows):
            raise ValueError(f"n_contexts: expected at most the {len(rows)} contexts in examples, got {n_contexts}")
        self.contexts = sorted(rows)
        # a row's own description (column "description", non-empty) is used instead of a draw from the pool:
        # sources whose target depends on the description's parameters (IFEval) set one per row
        self._row_description = (list(examples["description"]) if "description" in examples.column_names
                                 else None)
        self._rows = [np.asarray(rows[c], dtype=np.int64) for c in self.contexts]
        self._descriptions = [list(descriptions[c]) for c in self.contexts]
        self.n_contexts, self.k, self.seed = n_contexts, k, seed
        self.rank, self.world_size = rank, world_size
        self.step = 0

    @property
    def per_rank(self) -> int:
        """Examples per rank per step (n_contexts * k / world_size)."""
        return self.n_contexts * self.k // self.world_size

    def global_batch(self, step: int) -> list[tuple[int, str]]:
        """All ranks' (row index, description) pairs of ``step``, context-major."""
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step: expected a non-negative int, got {step!r}")
        rng = np.random.default_rng([self.seed, int(step)])
        out: list[tuple[int, str]] = []
        for ci in rng.choice(len(self.contexts), size=self.n_contexts, replace=False):
            rows, descs = self._rows[ci], self._descriptions[ci]
            picked = rows[rng.choice(len(rows), size=self.k, replace=False)]
            drawn = rng.integers(len(descs), size=self.k)
            out.extend((int(r), self._description(int(r), descs[d])) for r, d in zip(picked, drawn))
        return out

    def _description(self, row: int, drawn: str) -> str:
        own = self._row_description[row] if self._row_description is not None else None
        return own or drawn

    def batch(self, step: int) -> list[tuple[int, str]]:
        """This rank's share of step ``step``: ``per_rank`` (row index into examples, description) pairs."""
        start = self.rank * self.per_rank
        return self.global_batch(step)[start:start + self.per_rank]

    def __iter__(self) -> Iterator[list[tuple[int, str]]]:
        while True:
            out = self.batch(self.step)
            self.step += 1
            yield out

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "n_contexts": self.n_contexts, "k": self.k,
                "world_size": self.world_size, "contexts": list(self.contexts)}

    def load_state_dict(self, state: Mapping) -> None:
        """Resume at ``state['step']``; the sampling set-up must match (else a resumed run would differ)."""
        mine = self.state_dict()
        for key in ("seed", "n_contexts", "k", "world_size", "contexts"):
            if key not in state:
                raise ValueError(f"state: missing key {key!r}; expected keys {sorted(mine)}")
            if state[key] != mine[key]:
                shown = (f"{len(state[key])} contexts" if key == "contexts" else state[key])
                raise ValueError(f"state[{key!r}]: saved {shown!r} differs from this sampler's "
                                 f"{(f'{len(mine[key])} contexts' if key == 'contexts' else mine[key])!r}")
        self.step = int(state["step"])
