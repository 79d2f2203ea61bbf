"""Test driver for the distributed tests: the example with a failure injected on one rank, and a
check of validation metrics on a data set whose size the world size does not divide."""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import weakref
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
import distributed as example  # noqa: E402

import monitor  # noqa: E402
import monitor.runtime.distributed  # noqa: E402
from monitor.core._position import run_iteration  # noqa: E402  # the steps taken, as the history counts them

# The ranks are forked from the driver, which has imported torch and run nothing: a spawned rank imports
# torch and Ignite again (8 s of each launch on 2 cores, most of the distributed tests' time). Users of the
# example get spawn; --start-method spawn runs that (the test of a killed launcher does).
START_METHOD = "fork"


class FailOnRank:
    """Make ``rank`` raise (or SIGKILL itself) after ``iteration`` training iterations."""

    def __init__(self, rank: int, iteration: int, kind: str) -> None:
        self.rank, self.iteration, self.kind = rank, iteration, kind

    def __call__(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=self.iteration), self.fail)

    def fail(self, _: Engine) -> None:
        if idist.get_rank() != self.rank:
            return
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"rank {self.rank} failed at iteration {self.iteration}")


class SignalOnRank:
    """Send ``signum`` to ``rank``'s own process after ``iteration`` iterations (the others get none)."""

    def __init__(self, rank: int, iteration: int, signum: int) -> None:
        self.rank, self.iteration, self.signum = rank, iteration, signum

    def __call__(self, trainer: Engine) -> None:
        @trainer.on(Events.ITERATION_COMPLETED(once=self.iteration))
        def send(_: Engine) -> None:
            if idist.get_rank() == self.rank:
                os.kill(os.getpid(), self.signum)


class NanOnRank:
    """``rank`` alone sees a NaN loss at ``iteration`` (its step's output; the weights stay finite): what
    a bad batch on one process looks like to monitor."""

    def __init__(self, rank: int, iteration: int, then: object = None) -> None:
        self.rank, self.iteration, self.then = rank, iteration, then

    def __call__(self, trainer: Engine) -> None:
        @trainer.on(Events.ITERATION_COMPLETED(once=self.iteration))
        def poison(engine: Engine) -> None:
            if idist.get_rank() == self.rank:
                engine.state.output = {"loss": engine.state.output["loss"] * float("nan")}
        if callable(self.then):
            self.then(trainer)


class NanBatchOnRank:
    """``rank`` alone gets a batch of NaN inputs at ``iteration``: its loss, and through DDP's averaging
    every rank's gradients, would be NaN."""

    def __init__(self, rank: int, iteration: int, then: object = None) -> None:
        self.rank, self.iteration, self.then = rank, iteration, then

    def __call__(self, trainer: Engine) -> None:
        @trainer.on(Events.GET_BATCH_COMPLETED)
        def poison(engine: Engine) -> None:
            if idist.get_rank() == self.rank and engine.state.iteration + 1 == self.iteration:
                x, y = engine.state.batch
                engine.state.batch = (x * float("nan"), y)
        if callable(self.then):
            self.then(trainer)


class TrainedIndices:
    """Each rank appends, after each step, the epoch, the iteration (the steps taken, as the history counts
    them) and the indices of the samples it trained on (each row of the case study's data is unique:
    looked up by its bytes), to its own file."""

    def __init__(self, folder: str, seed: int, then: object = None) -> None:
        self.folder, self.seed, self.then = Path(folder), seed, then

    def __call__(self, trainer: Engine) -> None:
        path = self.folder / f"rank{idist.get_rank()}.{os.getpid()}.jsonl"
        # made in the rank: torch's thread pool used in the launcher hangs a forked rank's first parallel op
        train, _ = example.make_data(self.seed)
        index = {row.numpy().tobytes(): i for i, row in enumerate(train.tensors[0])}

        @trainer.on(Events.ITERATION_COMPLETED)
        def record(engine: Engine) -> None:
            indices = [index[row.cpu().numpy().tobytes()] for row in engine.state.batch[0]]
            with path.open("a") as f:
                f.write(json.dumps([engine.state.epoch, run_iteration(engine.state), indices]) + "\n")
        if callable(self.then):
            self.then(trainer)


class FinalWeights:
    """Rank 0 writes the model's parameters (full, as the optimizer lists them) as the run leaves them: after
    monitor's own COMPLETED handlers, so after the best weights are restored."""

    def __init__(self, path: str, then: object = None) -> None:
        self.path, self.then = Path(path), then

    def __call__(self, trainer: Engine) -> None:
        @trainer.on(Events.STARTED)  # after attach_monitoring: registered now, it runs after its handlers
        def later(_: Engine) -> None:
            trainer.add_event_handler(Events.COMPLETED, self.write)
        if callable(self.then):
            self.then(trainer)

    def write(self, _: Engine) -> None:
        [optimizer] = [o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        full = [p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in params]  # a collective
        if idist.get_rank() == 0:
            torch.save(full, self.path)


class Report:
    """Each rank writes its pid when training starts and its last iteration when it ends."""

    def __init__(self, folder: str, then: object = None) -> None:
        self.folder, self.then = Path(folder), then

    def __call__(self, trainer: Engine) -> None:
        rank = idist.get_rank()
        trainer.add_event_handler(
            Events.STARTED, lambda _: (self.folder / f"rank{rank}.pid").write_text(str(os.getpid()))
        )
        trainer.add_event_handler(
            Events.COMPLETED, lambda e: (self.folder / f"rank{rank}.iteration").write_text(str(e.state.iteration))
        )

        @trainer.on(Events.COMPLETED)
        def weights(_: Engine) -> None:  # the optimizer's weights and rates as this rank ends (before best restored)
            [optimizer] = [o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)]
            params = [p for g in optimizer.param_groups for p in g["params"]]
            summary = [float(sum(p.detach().double().sum() for p in params)), [g["lr"] for g in optimizer.param_groups]]
            (self.folder / f"rank{rank}.weights").write_text(json.dumps(summary))
        if callable(self.then):
            self.then(trainer)


def validation_metrics(local_rank: int, size: int, out: str) -> None:
    """Accuracy and loss of a fixed model on ``size`` samples, validated across the ranks, through monitor's
    validation loader (``"unpadded"``) and through ``idist.auto_dataloader``'s default (``"padded"``:
    DistributedSampler pads the ranks' shares)."""
    torch.manual_seed(0)
    x, y = torch.randn(size, 6), torch.randint(0, 2, (size,))
    model = nn.Linear(6, 2)
    dataset = TensorDataset(x, y)
    loaders = {"padded": idist.auto_dataloader(dataset, batch_size=16, shuffle=False),
               "unpadded": monitor.runtime.validation_loader(dataset, batch_size=16)}
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(nn.CrossEntropyLoss())})
    metrics = {name: {k: float(v) for k, v in evaluator.run(loader).metrics.items()} for name, loader in loaders.items()}
    if idist.get_rank() == 0:
        Path(out).write_text(json.dumps(metrics))


def run_validation_check(nproc: int, size: int, out: str) -> None:
    with idist.Parallel(backend="gloo" if nproc > 1 else None, nproc_per_node=nproc if nproc > 1 else None,
                        start_method=START_METHOD) as p:
        p.run(validation_metrics, size, out)


def leave(local_rank: int, out: str) -> None:
    """Broadcast tensors (as restoring the best weights does), leave together, and report which of
    those tensors gloo still held afterwards: any it holds at exit can abort the process."""
    alive = 0
    for _ in range(10):  # the race is timing-dependent: try it several times
        held = []
        for i in range(20):
            tensor = torch.full((1000,), float(i))
            idist.broadcast(tensor, src=0)
            held.append(weakref.ref(tensor))
            del tensor
        monitor.runtime.distributed.leave_together()
        alive += sum(ref() is not None for ref in held)
    Path(out).with_suffix(f".{idist.get_rank()}").write_text(str(alive))


def run_leave_check(out: str) -> None:
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=example._free_port(),
                        start_method=START_METHOD) as p:
        p.run(leave, out)


SHARED_TRAINING = example.training


def on_local_disks(local_rank: int, args: argparse.Namespace, customize: object = None) -> None:
    """The example's training, with each rank above 0 given an empty folder of its own: what another
    node's own disk shows of the run (nothing)."""
    if idist.get_rank() > 0:
        args = argparse.Namespace(**{**vars(args), "run_dir": f"{args.run_dir}-rank{idist.get_rank()}"})
    SHARED_TRAINING(local_rank, args, customize)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "validate", "leave"])
    parser.add_argument("--fail-rank", type=int)
    parser.add_argument("--fail-at", type=int)
    parser.add_argument("--fail-kind", choices=["raise", "kill"], default="raise")
    parser.add_argument("--size", type=int, default=97)
    parser.add_argument("--out")
    parser.add_argument("--signal-rank", type=int)
    parser.add_argument("--signal-at", type=int)
    parser.add_argument("--report-dir")
    parser.add_argument("--nan-rank", type=int, help="this rank alone sees a NaN loss at --nan-at")
    parser.add_argument("--nan-at", type=int)
    parser.add_argument("--nan-batch-rank", type=int, help="this rank alone gets a NaN batch at --nan-at")
    parser.add_argument("--record-trained", metavar="DIR", help="each rank writes the sample indices it trained")
    parser.add_argument("--final-weights", metavar="FILE", help="rank 0 writes the parameters the run ends with")
    parser.add_argument("--start-method", choices=["fork", "spawn"], default=START_METHOD)
    parser.add_argument("--local-disks", action="store_true",
                        help="each rank above 0 sees an empty folder of its own: the run folder is on rank 0's disk only")
    known, rest = parser.parse_known_args()
    START_METHOD = known.start_method
    if known.local_disks:
        example.training = on_local_disks  # type: ignore[assignment]
    if known.mode == "leave":
        run_leave_check(known.out)
    elif known.mode == "validate":
        run_validation_check(int(rest[rest.index("--nproc") + 1]), known.size, known.out)
    else:
        customize = None if known.fail_rank is None else FailOnRank(known.fail_rank, known.fail_at, known.fail_kind)
        if known.signal_rank is not None:
            customize = SignalOnRank(known.signal_rank, known.signal_at, signal.SIGTERM)
        if known.nan_rank is not None:
            customize = NanOnRank(known.nan_rank, known.nan_at, customize)
        if known.nan_batch_rank is not None:
            customize = NanBatchOnRank(known.nan_batch_rank, known.nan_at, customize)
        if known.report_dir is not None:
            customize = Report(known.report_dir, customize)
        if known.record_trained is not None:
            customize = TrainedIndices(known.record_trained, example.parse_args(rest).seed, customize)
        if known.final_weights is not None:
            customize = FinalWeights(known.final_weights, customize)
        example.launch(example.parse_args(rest), customize, start_method=START_METHOD)
