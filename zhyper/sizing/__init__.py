"""Sizing a run from configs alone: the known base models, trainable-parameter counts (meta device)."""
