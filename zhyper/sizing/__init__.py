"""Sizing a run from configs alone (meta device, no weights): the known base models, trainable-parameter
counts (``params``), per-rank memory and computed step time (``memory``), ``zhyper plan`` (``plan``), and
the measured runtime of a CPU rank (``runtime``)."""
