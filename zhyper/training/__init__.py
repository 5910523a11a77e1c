"""Training: run config, objective, crash-safe checkpoints, evaluation (used by launch/train.py)."""
