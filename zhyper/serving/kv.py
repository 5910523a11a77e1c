"""The running batch's tensors: a KV cache written in place, the attention mask, positions, last tokens, modulation.

``SlabCache`` is a transformers ``DynamicCache`` whose layers keep their keys and values in pre-allocated
slabs (b, heads, T + room, head_dim): a decode step writes its new column in place, where a plain
``DynamicCache`` concatenates (copies) every layer's whole cache once per token. The model sees views of
the first T columns, so attention reads exactly the tensors it read before. A slab grows (one copy) when
the room runs out; ``room`` is at most ``ROOM`` columns and never more than the rows still need.

``RunningBatch`` holds what the decode loop carries from step to step:

    merge   new rows (their prefilled cache, mask, first token, modulation) join the running rows: both
            caches and masks are left-padded to the longer of the two (zero keys and values, mask 0) and
            stacked along the batch dimension
    step    the inputs of one decode step: each row's last token (b, 1), the mask with one more column
            (b, T + 1) and explicit position ids (each row's own count of real tokens, so padding never
            shifts RoPE)
    keep    rows that left (finished, failed, cancelled) are dropped from the cache, the mask, the
            positions and the modulation at once; mask columns that are padding for every remaining row
            are cut off the front
"""

from __future__ import annotations

import functools

import torch

from .cache import cat_rows, select_rows

ROOM = 64  # most columns a slab holds beyond its tokens


def new_cache(room: int = ROOM):
    """An empty ``SlabCache`` (its layers are created on first use, one per decoder layer)."""
    return _cache_class()(room)


@functools.cache
def _cache_class():
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class SlabLayer(DynamicLayer):
        """One layer's keys / values as views (b, h, T, d) of slabs (b, h, T + room, d), written in place."""

        def __init__(self, owner):
            super().__init__()
            self.owner, self.k_slab, self.v_slab, self.length = owner, None, None, 0

        adopt = _adopt

        def update(self, key_states, value_states, *args, **kwargs):
            return _update(self, key_states, value_states)

    class SlabCache(DynamicCache):
        """A DynamicCache of slab layers; ``room``: free columns a slab gets when it is (re)allocated."""

        def __init__(self, room: int):
            Cache.__init__(self, layer_class_to_replicate=functools.partial(SlabLayer, self))
            self.room = room

    return SlabCache


def _set(layer, k_slab: torch.Tensor, v_slab: torch.Tensor, length: int) -> None:
    layer.k_slab, layer.v_slab, layer.length = k_slab, v_slab, length
    layer.keys, layer.values = k_slab[:, :, :length], v_slab[:, :, :length]


def _adopt(layer, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
    """The layer holds copies of ``keys`` / ``values`` (b, h, T, d) with ``room`` free columns after them."""
    if not layer.is_initialized:
        layer.lazy_initialization(keys, values)
    b, h, t, _ = keys.shape
    k_slab = keys.new_empty((b, h, t + room, keys.shape[-1]))
    v_slab = values.new_empty((b, h, t + room, values.shape[-1]))
    k_slab[:, :, :t].copy_(keys)
    v_slab[:, :, :t].copy_(values)
    _set(layer, k_slab, v_slab, t)


def _update(layer, key_states: torch.Tensor, value_states: torch.Tensor):
    """Write the new columns in place (the first call adopts them); (keys, values) of every column so far."""
    n, room = key_states.shape[-2], max(1, layer.owner.room)
    if layer.k_slab is None:
        layer.adopt(key_states, value_states, room)
        return layer.keys, layer.values
    if layer.length + n > layer.k_slab.shape[-2]:  # out of room: one copy into a longer slab
        layer.adopt(layer.keys, layer.values, n + room)
    end = layer.length + n
    layer.k_slab[:, :, layer.length:end].copy_(key_states)
    layer.v_slab[:, :, layer.length:end].copy_(value_states)
    _set(layer, layer.k_slab, layer.v_slab, end)
    return layer.keys, layer.values


def _stacked(x: torch.Tensor, y: torch.Tensor, t: int, room: int) -> torch.Tensor:
    """A slab holding [x; y] along the batch, each left-padded with zeros to ``t`` columns, then ``room``."""
    b1 = x.shape[0]
    slab = x.new_zeros((b1 + y.shape[0], x.shape[1], t + room, x.shape[-1]))
    slab[:b1, :, t - x.shape[-2]:t].copy_(x)
    slab[b1:, :, t - y.shape[-2]:t].copy_(y)
    return slab


def _left_pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zeros in front of ``x`` (b, T) up to ``length`` columns."""
    missing = length - x.shape[-1]
    return x if missing == 0 else torch.cat([x.new_zeros((x.shape[0], missing)), x], dim=-1)


class RunningBatch:
    """The rows decoding together and their tensors (see the module docstring); empty when ``rows`` is []."""

    def __init__(self):
        self.rows: list = []
        self.kv = None  # SlabCache of the running rows' keys and values
        self.mask = None  # (b, T) long: 1 real token, 0 padding
        self.pos = None  # (b,) position id of each row's next input token
        self.last = None  # (b,) each row's next input token
        self.mod = None  # modulation of the running rows

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def room_for(rows) -> int:
        """Free columns worth allocating: what the rows may still generate, at most ``ROOM``."""
        return max(1, min(ROOM, max((row.remaining for row in rows), default=1)))

    def merge(self, rows: list, cache, mask: torch.Tensor, last: torch.Tensor, modulation) -> None:
        """Add prefilled rows: ``cache`` and ``mask`` (n, T') of their prompts, their first tokens ``last``."""
        pos = mask.sum(-1)
        if not self.rows:
            self.rows, self.kv, self.mask, self.pos, self.last, self.mod = rows, cache, mask, pos, last, modulation
            return
        t = max(self.mask.shape[1], mask.shape[1])
        room = self.room_for(self.rows + rows)
        for old, new in zip(self.kv.layers, cache.layers):
            _set(old, _stacked(old.keys, new.keys, t, room), _stacked(old.values, new.values, t, room), t)
        self.kv.room = room
        self.mask = torch.cat([_left_pad(self.mask, t), _left_pad(mask, t)], dim=0)
        self.pos = torch.cat([self.pos, pos])
        self.last = torch.cat([self.last, last])
        self.mod = cat_rows([self.mod, modulation])
        self.rows = self.rows + rows

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input ids (b, 1), attention mask (b, T + 1), position ids (b, 1)) of the next decode step."""
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        return self.last[:, None], mask, self.pos[:, None]

    def advance(self, mask: torch.Tensor, tokens: torch.Tensor) -> None:
        """After a step: its mask, every position one further, the tokens just chosen as the next inputs."""
        self.mask, self.pos, self.last = mask, self.pos + 1, tokens

    def keep_live(self) -> None:
        """Drop the rows that left; cut the columns that are padding in every remaining row."""
        keep = [i for i, row in enumerate(self.rows) if row.live]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.__init__()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.pos, self.last = self.mask[index], self.pos[index], self.last[index]
        self.mod = select_rows(self.mod, index)
        first = int(torch.nonzero(self.mask.any(0))[0, 0])  # columns before it are padding in every row
        self.kv.room = self.room_for(self.rows)
        for layer in self.kv.layers:
            layer.adopt(layer.keys[index, :, first:], layer.values[index, :, first:], self.kv.room)
        self.mask = self.mask[:, first:]
