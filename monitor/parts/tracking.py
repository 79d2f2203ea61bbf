"""Experiment trackers fed from the history: MLflow (a part that keeps its run id across resumes),
and any Ignite logger (``BaseLogger``: ClearML, Neptune, W&B, Visdom, Polyaxon...) through one adapter.

Both log each history row as it is written, the same values as ``history.csv`` (step = iteration),
from global rank 0 only, so a tracker never shows another number than the run folder.

Examples:
    .. code-block:: python

        run = attach_monitoring(..., parts=[monitor.MLflow("http://127.0.0.1:5000", experiment="mlp")])

        from ignite.handlers.clearml_logger import ClearMLLogger
        run = attach_monitoring(..., parts=[monitor.Tracker(ClearMLLogger(project="mlp", task_name="run"))])
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monitor.core._position import run_iteration
from monitor.parts.base import Part, PartContext
from monitor.runtime.distributed import is_main_process
from monitor.runtime.versions import library_versions
from monitor.store.record import read_record

__all__ = ["MLflow", "Tracker"]

logger = logging.getLogger(__name__)

_NOT_LOGGED = ("iteration",)  # the step itself


def row_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric columns of a history row (``is_best`` as 0/1), as a tracker logs them."""
    out: dict[str, float] = {}
    for name, value in row.items():
        if name in _NOT_LOGGED or value is None or isinstance(value, str):
            continue
        if isinstance(value, (bool, int, float)):
            out[name] = float(value)
    return out


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = str(value)[:6000]  # MLflow's limit for a param's value


class _Sender:
    """One daemon thread sending jobs in order; a job that fails is dropped and said once (WARNING),
    so that a tracker that is down never stops or slows training. (Not the run's ``OrderedWriter``:
    its first error stops it and fails the run, and a full queue blocks the training thread, both
    right for the run folder and wrong for a tracker.)"""

    def __init__(self, what: str) -> None:
        self.what = what
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.failed = 0
        self.thread = threading.Thread(target=self._work, name=f"monitor-{what}", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self.jobs.put(job)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except Exception as e:  # the tracker, not the training, failed
                self.failed += 1
                if self.failed == 1:
                    logger.warning("%s could not be reached (%s: %s); training goes on, the run folder stays the "
                                   "record; what it missed is not sent again.", self.what, type(e).__name__,
                                   " ".join(str(e).split()) or "no message")
            finally:
                self.jobs.task_done()

    def drain(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the jobs sent so far; whether all were done."""
        deadline = time.monotonic() + timeout
        while self.jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.jobs.unfinished_tasks


# What a request that never left this machine fails with (through MLflow's and urllib3's messages): no
# connection made, so the server cannot have stored it. Any other failure may come after it did.
_NEVER_SENT = ("Connection refused", "NewConnectionError", "Name or service not known", "No route to host")


def _never_sent(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) says no connection to the server was made.

    >>> _never_sent(ConnectionRefusedError(111, "Connection refused"))
    True
    >>> _never_sent(ConnectionResetError("Remote end closed connection without response"))
    False
    """
    seen: BaseException | None = error
    while seen is not None:
        if any(sign in str(seen) for sign in _NEVER_SENT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# The URI schemes an MLflow tracking URI may have (MLflow's own stores and its REST server).
_MLFLOW_SCHEMES = ("http", "https", "file", "databricks", "databricks-uc", "uc", "sqlite", "postgresql", "mysql",
                   "mssql")


def _check_tracking_uri(uri: Any) -> None:
    """Refuse what MLflow would take as a tracking URI only to fail at the first request."""
    if uri is None:
        return
    if not isinstance(uri, str) or not uri:
        raise TypeError(f"Argument tracking_uri should be a URI (str) or None, got {uri!r}.")
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else None
    if scheme is not None and scheme not in _MLFLOW_SCHEMES:
        raise ValueError(f"Argument tracking_uri should have a scheme MLflow knows ({', '.join(_MLFLOW_SCHEMES)}) "
                         f"or be a local folder, got {uri!r}.")


class MLflow(Part):
    """A part that mirrors the run to an MLflow tracking server (or a local ``mlruns`` folder).

    - **params** at the start: the settings ``run.json`` records (objective, early stopping,
      checkpoints, hparams, seed, each part's), the run folder and the library versions;
    - **metrics**: every history column at each validation, the same values as ``history.csv``,
      step = iteration (``epoch`` is a metric too);
    - **at the end**: tags ``status``, ``stop_reason``, ``findings``, ``best_value``, ``best_epoch``;
      the best checkpoint and ``run.json`` as artifacts; the MLflow run ends ``FINISHED`` (``FAILED``
      for a failure, ``KILLED`` for an interruption a resume continues).

    A resume continues the same MLflow run (its id is in the last checkpoint and in ``run.json``'s
    ``mlflow_run``) and logs no step twice (the rows a resume trains again are the same values; those
    the MLflow run has are left out). Only global rank 0 logs. Everything is sent by a background
    thread: a server that is down or slow is a WARNING, never a crash or a wait (each request is
    bounded by ``timeout`` seconds, without retries, unless ``MLFLOW_HTTP_REQUEST_TIMEOUT`` or
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` are set; the end waits at most ``end_timeout``).

    Args:
        tracking_uri: the server (``http://host:5000``), or ``None`` for MLflow's default
            (``MLFLOW_TRACKING_URI``, else ``./mlruns``).
        experiment: the experiment's name (made if missing). Default ``"monitor"``.
        run_name: the MLflow run's name; default the run folder's name.
        log_checkpoint: log the best checkpoint as an artifact at the end. Default True.
        timeout: seconds a request may take. Default 5.
        end_timeout: seconds the end of training waits for what is still being sent. Default 30.
    """

    key = "mlflow"

    def __init__(self, tracking_uri: str | None = None, *, experiment: str = "monitor", run_name: str | None = None,
                 log_checkpoint: bool = True, timeout: float = 5.0, end_timeout: float = 30.0) -> None:
        for name, value in (("timeout", timeout), ("end_timeout", end_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"Argument {name} should be a positive, finite number of seconds, got {value!r}.")
        _check_tracking_uri(tracking_uri)
        if not isinstance(experiment, str) or not experiment:
            raise ValueError(f"Argument experiment should be a non-empty name, got {experiment!r}.")
        if run_name is not None and not isinstance(run_name, str):
            raise TypeError(f"Argument run_name should be a name (str) or None, got {run_name!r}.")
        if not isinstance(log_checkpoint, bool):
            raise TypeError(f"Argument log_checkpoint should be True or False, got {log_checkpoint!r}.")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.log_checkpoint, self.timeout, self.end_timeout = log_checkpoint, float(timeout), float(end_timeout)
        self.run_id: str | None = None
        self.logged_step = 0  # the highest step the MLflow run has (rows up to it are not sent again)
        self.missed_rows = 0  # history rows this process could not send (said at the end)
        self.unanswered_rows = 0  # of those, rows whose request failed after it may have reached the server
        self._context: PartContext | None = None
        self._client: Any = None
        self._sender: _Sender | None = None
        self._rows: list[tuple[int, int, dict[str, float]]] = []  # (step, time in ms, metrics) not yet sent
        self._lock = threading.Lock()

    def check(self, context: PartContext) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as e:
            raise ImportError('MLflow needs the mlflow package: pip install -e ".[mlflow]"') from e

    def attach(self, context: PartContext) -> None:
        self.check(context)
        self._context = context
        context.trainer.add_event_handler(Events.STARTED, self._started)
        context.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def config(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "run_name": self.run_name}

    def record(self) -> dict[str, Any]:
        """``run.json``'s ``mlflow_run``: the MLflow run this one is mirrored to."""
        if self.run_id is None:
            return {"mlflow_run": None}
        return {"mlflow_run": {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "experiment": self.experiment}}

    # -- the MLflow run -------------------------------------------------------------------------
    def _start(self) -> None:
        """On the sender thread: make (or find again) the MLflow run and log the params."""
        from mlflow import MlflowClient
        from mlflow.entities import Param

        assert self._context is not None
        for name, value in (("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(math.ceil(self.timeout)))),
                            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")):
            os.environ.setdefault(name, value)  # bounded: a server that is down costs seconds, not minutes
        client = MlflowClient(tracking_uri=self.tracking_uri)
        if self.run_id is not None:  # a resume: the same MLflow run, from the step it has
            client.update_run(self.run_id, status="RUNNING")
            column = self._context.objective.column
            history = client.get_metric_history(self.run_id, column)
            self.logged_step = max([self.logged_step, *(m.step for m in history)])
            self._client = client
            return
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = str(found.experiment_id if found is not None else client.create_experiment(self.experiment))
        run_dir = self._context.run_dir
        run_name = self.run_name or (run_dir.name if run_dir is not None else None)
        created = client.create_run(experiment_id, run_name=run_name, tags={"monitor.run_dir": str(run_dir)})
        self.run_id = created.info.run_id
        params: dict[str, str] = {}
        _flat("", {k: v for k, v in self._context.config.items() if k != self.key}, params)
        _flat("versions", library_versions(), params)
        params["run_dir"] = str(run_dir)
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(self.run_id, params=items[i:i + 100])
        self._client = client

    def _started(self, _: Engine) -> None:
        if not is_main_process():
            return
        if self.run_id is None and self._context is not None and self._context.run_dir is not None:
            # A run killed before its first checkpoint: the MLflow run run.json names is this run's too.
            named = (read_record(self._context.run_dir) or {}).get("mlflow_run") or {}
            if named.get("run_id") and (named.get("tracking_uri"), named.get("experiment")) == (
                    self.tracking_uri, self.experiment):
                self.run_id = str(named["run_id"])
        if self._sender is None:
            self._sender = _Sender(f"MLflow ({self.tracking_uri or 'default tracking URI'})")
        self._sender.submit(self._start)
        # The MLflow run's id goes into the first checkpoint: wait for it, at most one request's time.
        self._sender.drain(self.timeout + 1.0)

    def _validated(self, _: Engine) -> None:
        if self._sender is None or self._context is None:
            return
        history = self._context.objects.get("history")
        row = dict(getattr(history, "last_row", None) or {})
        step = int(row.get("iteration") or run_iteration(self._context.trainer.state))
        with self._lock:  # the rows waiting go in one request: fast validations do not queue a request each
            self._rows.append((step, int(time.time() * 1000), row_metrics(row)))
            if len(self._rows) > 1:
                return  # a send of the waiting rows is queued already
        self._sender.submit(self._log_rows)

    def _log_rows(self) -> None:
        from mlflow.entities import Metric

        with self._lock:
            rows, self._rows = self._rows, []
        if self._client is None or self.run_id is None:
            self.missed_rows += len(rows)
            return  # not started (the server was down)
        metrics = [Metric(k, v, at, step) for step, at, values in rows if step > self.logged_step  # not twice
                   for k, v in values.items()]
        try:
            for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a request
                self._client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        except Exception as e:
            lost = sum(1 for step, _, _ in rows if step > self.logged_step)
            self.missed_rows += lost
            if not _never_sent(e):  # e.g. the connection dropped before the answer: the server may have stored them
                self.unanswered_rows += lost
            raise
        if rows:
            self.logged_step = max(self.logged_step, max(step for step, _, _ in rows))

    def ended(self, run: Any) -> None:
        """Tags, artifacts and the MLflow run's end, once monitor recorded the end of the run."""
        if self._sender is None:
            return
        self._sender.submit(lambda: self._finish(run))
        if not self._sender.drain(self.end_timeout):
            logger.warning("MLflow: still sending after %.0f s; the rest is dropped (the run folder has it all).",
                           self.end_timeout)
        if self.missed_rows:
            unsure = f", {self.unanswered_rows} of them in requests that got no answer (the server may have " \
                     "stored those)" if self.unanswered_rows else ""
            logger.warning("MLflow missed %d history row(s) of this run%s; history.csv has them all.",
                           self.missed_rows, unsure)

    def _finish(self, run: Any) -> None:
        from mlflow.entities import RunTag

        if self._client is None or self.run_id is None:
            return
        record = run.record.data
        findings = [f"{f.get('level', 'problem')}:{f.get('kind')}" for f in record.get("findings") or ()]
        tags = {"status": run.status.value, "stop_reason": record.get("stop_reason"),
                "findings": ", ".join(findings) or "-", "best_value": run.best.best_value,
                "best_epoch": run.best.best_epoch}
        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        run_json = Path(run.run_dir) / "run.json"
        if run_json.exists():
            self._client.log_artifact(self.run_id, str(run_json))
        best = run.best_checkpoint.last_checkpoint
        if self.log_checkpoint and best is not None and Path(best).exists():
            self._client.log_artifact(self.run_id, str(best), artifact_path="checkpoints")
        status = {"completed": "FINISHED", "early_stopped": "FINISHED", "diverged": "FINISHED",
                  "interrupted": "KILLED"}.get(run.status.value, "FAILED")
        self._client.set_terminated(self.run_id, status=status)

    # -- checkpoint --------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, Any]:
        return OrderedDict(run_id=self.run_id)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.run_id = state_dict.get("run_id")


class Tracker(Part):
    """A part that feeds each history row to any Ignite logger (a ``BaseLogger``: ClearML, Neptune,
    W&B, Visdom, Polyaxon, MLflow, TensorBoard): the same values as ``history.csv``, under
    ``tag/column``, at step = iteration, through the logger's own output handler on the evaluator.
    The logger's own handlers log from rank 0 only; close the logger yourself at the end.

    Args:
        ignite_logger: the logger.
        tag: the prefix of the names. Default ``"history"``.
    """

    key = "tracker"

    def __init__(self, ignite_logger: Any, *, tag: str = "history") -> None:
        if isinstance(ignite_logger, type):
            raise TypeError(f"Argument ignite_logger should be an Ignite logger (an instance, e.g. "
                            f"{ignite_logger.__name__}(...)), got the class {ignite_logger.__name__}.")
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"Argument tag should be a non-empty name (str), got {tag!r}.")
        if not callable(getattr(ignite_logger, "attach_output_handler", None)):
            raise TypeError(f"Argument ignite_logger should be an Ignite BaseLogger (ClearMLLogger, NeptuneLogger, "
                            f"WandBLogger, ...), got {ignite_logger!r}.")
        self.logger, self.tag = ignite_logger, tag

    def attach(self, context: PartContext) -> None:
        def row(_: Any) -> dict[str, float]:
            history = context.objects.get("history")
            return row_metrics(getattr(history, "last_row", None) or {})

        self.logger.attach_output_handler(
            context.evaluator, event_name=Events.COMPLETED, tag=self.tag, output_transform=row,
            global_step_transform=lambda *_: run_iteration(context.trainer.state),
        )

    def config(self) -> dict[str, Any]:
        return {"logger": type(self.logger).__name__, "tag": self.tag}

