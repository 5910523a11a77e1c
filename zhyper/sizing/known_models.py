"""The sentence encoders the memory plan knows by name (their sizes; the encoder is never loaded for it).

The base models zhyper names, with their configs, are in ``zhyper.bases``.
"""

from __future__ import annotations

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
