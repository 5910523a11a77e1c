"""MLflow tracking for training runs (rank 0 only; other ranks get a tracker that records nothing).

MLflow 3 refuses the plain file store, so the default store is a SQLite file in the run's
output folder (``sqlite:///<output_dir>/mlflow.db``). Metrics go through MLflow's own
asynchronous logging (``log_batch(..., synchronous=False)``), which queues and batches them off the
training thread; ``flush`` waits for the queue.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def default_tracking_uri(output_dir: str | Path) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


class Tracker:
    """Sends params, metrics and artefacts to one MLflow run. ``active=False`` makes every call a no-op."""

    def __init__(self, active: bool, output_dir: str | Path, experiment: str = "zhyper",
                 tracking_uri: str | None = None, run_name: str | None = None, run_id: str | None = None):
        self.active = active
        self.run_id: str | None = None
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(output_dir)
        if not active:
            return
        import mlflow
        from mlflow.tracking import MlflowClient

        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=(Path(output_dir).resolve() / "mlartifacts").as_uri())
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        else:  # a resumed run: it may have ended KILLED / FAILED (interrupted) or stopped (train.stop_after)
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self._mlflow = mlflow
        self._finished = False
        log.info("MLflow run %s at %s", run_id, self.tracking_uri)

    def log_params(self, params: dict[str, str]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        existing = set(self.client.get_run(self.run_id).data.params)
        items = [p for p in items if p.key not in existing]  # a resumed run keeps its params
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.active or not metrics:
            return
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()],
                              synchronous=False)

    def flush(self) -> None:
        if self.active:
            self._mlflow.flush_async_logging()

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        self.flush()
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED", note: str | None = None, flush_timeout: float | None = None) -> None:
        """End the MLflow run with ``status`` (FINISHED, KILLED, FAILED) once; ``note``: tag ``zhyper.ended``.

        ``flush_timeout``: wait at most that long for queued metrics (an interrupted run must end its
        MLflow run before the launcher's grace period is over; a few last metrics may be lost)."""
        if not self.active or self._finished:
            return
        self._finished = True
        if flush_timeout is None:
            self.flush()
        else:
            import threading

            flusher = threading.Thread(target=self.flush, name="zhyper-mlflow-flush", daemon=True)
            flusher.start()
            flusher.join(flush_timeout)
        if note:
            self.client.set_tag(self.run_id, "zhyper.ended", note)
        self.client.set_terminated(self.run_id, status=status)
