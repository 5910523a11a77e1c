"""Progress of a run: the step range, the loss history, the progress bar, timing and MLflow logging.

``losses.json`` holds the whole loss history of the run: it travels in every checkpoint's client
state, so a resumed run continues the list instead of starting a new one.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Iterator

log = logging.getLogger("zhyper.train")


def fresh_state() -> dict:
    """The client state of a run that starts at step 0."""
    return {"step": 0, "losses": [], "mlflow_run_id": None, "train_time_s": 0.0, "tokens": 0}


class Progress:
    """Owns the tracker and the loss history; rank 0 shows a progress bar and writes ``losses.json``."""

    def __init__(self, cfg, session, engine, state: dict, n_trainable: int):
        from zhyper.training.config import flatten
        from zhyper.training.tracking import Tracker

        self.cfg, self.session, self.engine = cfg, session, engine
        self.start_step = int(state["step"])
        self.losses: list[float] = list(state.get("losses", []))[:self.start_step]
        self._train_time = float(state.get("train_time_s", 0.0))
        self._tokens = int(state.get("tokens", 0))
        self.tracker = Tracker(session.master, session.out_dir, cfg.experiment, cfg.tracking_uri, cfg.run_name,
                               run_id=state.get("mlflow_run_id"))
        self.tracker.log_params(flatten(cfg.to_dict()) | {
            "world_size": str(session.world), "zero_stage": str(engine.zero_optimization_stage()),
            "dtype": str(next(engine.module.parameters()).dtype), "n_trainable": str(n_trainable)})
        self.n_trainable = n_trainable
        from zhyper.training.session import on_abort

        on_abort(self._aborted)
        self._bar = None
        self._t0 = None

    def steps(self) -> Iterator[int]:
        from tqdm import tqdm

        self._bar = tqdm(range(self.start_step, self.cfg.train.max_steps), initial=self.start_step,
                         total=self.cfg.train.max_steps, disable=not self.session.master, desc="train",
                         dynamic_ncols=True)
        self._t0 = time.perf_counter()
        yield from self._bar

    def log_step(self, step: int, result) -> None:
        self.losses.append(result.loss)
        self._tokens += result.tokens
        self.tracker.log_metrics({"train_loss": result.loss, "lr": self.engine.get_lr()[0]}, step + 1)
        self._bar.set_postfix(loss=f"{result.loss:.4f}")
        if (step + 1) % self.cfg.train.log_every == 0:
            self.tracker.flush()

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(metrics, step)
        if self.session.master:
            log.info("step %d: %s", step, "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    def _elapsed(self) -> float:
        return self._train_time + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def client_state(self, sampler) -> dict:
        """What a checkpoint stores beside the engine state to resume exactly."""
        from zhyper.training.resume import run_record

        return {"step": len(self.losses), "sampler": sampler.state_dict(), "mlflow_run_id": self.tracker.run_id,
                "losses": list(self.losses), "train_time_s": self._elapsed(), "tokens": self._tokens,
                "run": run_record(self.cfg, self.session.out_dir)}  # what check_resumable compares

    def _write_losses(self, extra: dict | None = None) -> None:
        if self.session.master:
            from zhyper.io import atomic_write

            atomic_write(self.session.out_dir / "losses.json", json.dumps(
                {"start_step": self.start_step, "losses": self.losses, **(extra or {})}))

    def _aborted(self, status: str) -> None:
        """The run ends early (interrupt or error): the MLflow run ends ``status``, noting where to resume."""
        from zhyper.training.resume import latest_tag

        tag = latest_tag(self.session.ckpt_dir)
        where = f"the last complete checkpoint is {tag}: continue with --resume" if tag else "no checkpoint was written"
        self.tracker.finish(status, note=f"{status.lower()} after step {len(self.losses)}; {where}", flush_timeout=3)

    def stopped(self, step: int) -> None:
        """``train.stop_after``: the run ends here with a checkpoint; ``--resume`` continues it (and its MLflow run,
        which ends KILLED until then, tagged zhyper.ended)."""
        self.tracker.finish("KILLED", note=f"stopped after step {step} (train.stop_after); continue with --resume")
        self._write_losses()
        if self.session.master:
            log.info("stopped after step %d as asked (train.stop_after); continue with --resume", step)

    def finish_training(self) -> dict[str, float]:
        """Close the bar, write losses.json with the speed figures; returns them (and the trained size)."""
        if self._bar is not None:
            self._bar.close()
        elapsed = self._elapsed()
        n = max(1, len(self.losses))
        speed = {"step_time_s": elapsed / n, "tokens_per_s_per_rank": self._tokens / max(elapsed, 1e-9),
                 "train_time_s": elapsed}
        self._write_losses(speed)
        self.tracker.log_metrics(speed, self.cfg.train.max_steps)
        return {**speed, "n_trainable": self.n_trainable}
