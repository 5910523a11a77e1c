"""Config-only definitions of the base models we name (no weights, no download).

The numbers are the public ``config.json`` values of each model; ``count_parameters`` builds
them on the meta device.
"""

from __future__ import annotations

KNOWN_BASES = {
    "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.2",
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def mistral_7b_config():
    """Mistral-7B-Instruct-v0.2: 32 layers, hidden 4096, 32 heads / 8 KV heads (q 4096->4096, v 4096->1024)."""
    from transformers import MistralConfig

    return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
                         max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def smollm2_135m_config():
    """SmolLM2-135M-Instruct: 30 layers, hidden 576, 9 heads / 3 KV heads (q 576->576, v 576->192), tied."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
                       max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def base_config(name: str):
    """The config of a known base by short name (``mistral-7b`` or ``smollm2``)."""
    builders = {"mistral-7b": mistral_7b_config, "smollm2": smollm2_135m_config}
    if name not in builders:
        raise ValueError(f"base: expected one of {sorted(builders)}, got {name!r}")
    return builders[name]()


# Run-config base_model values that name a known base (the recipe's shipped name or the hub id).
_RUN_NAMES = {"smollm2": "smollm2", **{hub_id: short for short, hub_id in KNOWN_BASES.items()}}


def known_base_name(base_model: str) -> str | None:
    """The short name of a run config's ``base_model`` when it is a known base (e.g. the hub id
    ``mistralai/Mistral-7B-Instruct-v0.2`` -> ``mistral-7b``), else None."""
    return _RUN_NAMES.get(base_model)


# Parameters of the known sentence encoders (for memory planning; the encoder is never loaded for it).
# all-MiniLM-L6-v2: counted on the shipped model. gte-large-en-v1.5 ("NewModel"): from its config.json
# (24 layers, hidden 1024, gated MLP 4096, vocab 30528, 2 token types) and its modelling code (qkv, o and
# down projections with bias, the up/gate projection without): 31,264,768 embeddings + 24 x 16,786,432
# per layer, no pooler (the model card's "434M").
KNOWN_ENCODER_PARAMS = {
    "all-MiniLM-L6-v2": 22_713_216,
    "sentence-transformers/all-MiniLM-L6-v2": 22_713_216,
    "Alibaba-NLP/gte-large-en-v1.5": 434_139_136,
}
