"""Training overhead of monitoring, per steady epoch, as a ratio to a raw PyTorch loop.

    .venv/bin/python benchmarks/bench_overhead.py [--repeats 5] [--epochs 4]

Workloads (batch 64, 55 train + 24 validation batches, as the case study): the case-study MLP
784-100-100-2; a tiny MLP 10-16-2; the case-study MLP with the training loss logged to TensorBoard
every iteration. Variants: the raw loop (the floor); the raw loop with the tutorial's hand-written
monitoring (early stopping that saves checkpoint.pt on each improvement, printing); Ignite wired by
hand (EarlyStopping, Checkpoint, TensorboardLogger, ProgressBar, a CSV writer); Ignite's engine and
metrics alone; monitor with everything on at the default checkpoint cadence (progress bar to a
null stream); monitor with a last checkpoint every epoch (the cadence before the budget); PyTorch Lightning where
installed. Each variant trains a fresh model from the same seed on the same batches, for
``--epochs`` epochs after one warm-up epoch, and must end with the same validation accuracy.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio_table  # noqa: E402

N_TRAIN, N_VAL, BATCH = 55 * 64, 24 * 64, 64


def data(features: int) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_VAL, features, generator=g) * 0.05
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:])


def model_for(features: int) -> nn.Module:
    torch.manual_seed(0)
    if features == 784:
        return nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2))
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))


def loaders(features: int) -> tuple[DataLoader, DataLoader]:
    train, val = data(features)
    return (DataLoader(train, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)),
            DataLoader(val, batch_size=BATCH))


def accuracy(model: nn.Module, val_loader: DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in val_loader)
    return correct / N_VAL


# -- variants: each returns (seconds for the measured epochs, final validation accuracy) ----------

def raw_loop(features: int, epochs: int, tb_every_iteration: bool, workdir: Path, tutorial: bool = False):
    model, (train_loader, val_loader) = model_for(features), loaders(features)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    writer = None
    if tb_every_iteration:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(str(workdir / "raw_tb"))
    best, counter, step, out = None, 0, 0, io.StringIO()
    start = 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            start = time.perf_counter()
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            if writer is not None:
                writer.add_scalar("train/loss", loss.item(), step)
        model.eval()
        total = 0.0
        with torch.no_grad():
            for x, y in val_loader:
                total += loss_fn(model(x), y).item() * len(y)
        val_loss = total / N_VAL
        if tutorial:  # the tutorial's EarlyStopping(patience, verbose, delta): save on improvement
            if best is None or val_loss < best:
                print(f"Validation loss decreased ({best} --> {val_loss:.6f}). Saving model ...", file=out)
                torch.save(model.state_dict(), workdir / "checkpoint.pt")
                best, counter = val_loss, 0
            else:
                counter += 1
                print(f"EarlyStopping counter: {counter} out of 1000", file=out)
    elapsed = time.perf_counter() - start
    if writer is not None:
        writer.close()
    return elapsed, accuracy(model, val_loader)


def ignite_engine(features: int, epochs: int, tb_every_iteration: bool, workdir: Path, wired: bool = False):
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
    from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping, ProgressBar, TensorboardLogger
    from ignite.handlers.tensorboard_logger import OutputHandler
    from ignite.metrics import Accuracy, Loss

    model, (train_loader, val_loader) = model_for(features), loaders(features)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = create_supervised_trainer(model, optimizer, loss_fn)
    evaluator = create_supervised_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val_loader))
    if wired:
        folder = Path(tempfile.mkdtemp(dir=workdir))
        es = EarlyStopping(1000, lambda e: -e.state.metrics["loss"], trainer)
        evaluator.add_event_handler(Events.COMPLETED, es)
        best = Checkpoint({"model": model}, DiskSaver(folder, require_empty=False), n_saved=3,
                          score_function=lambda e: -e.state.metrics["loss"], score_name="neg_val_loss")
        evaluator.add_event_handler(Events.COMPLETED, best)
        last = Checkpoint({"model": model, "optimizer": optimizer, "trainer": trainer},
                          DiskSaver(folder, require_empty=False), n_saved=1, filename_prefix="last")
        trainer.add_event_handler(Events.EPOCH_COMPLETED, last)
        tb = TensorboardLogger(log_dir=str(folder / "tb"))
        tb.attach(trainer, OutputHandler(tag="train", output_transform=lambda loss: {"loss": loss}),
                  Events.ITERATION_COMPLETED(every=1 if tb_every_iteration else 10))
        tb.attach(evaluator, OutputHandler(tag="val", metric_names="all",
                                           global_step_transform=lambda *_: trainer.state.iteration), Events.COMPLETED)
        ProgressBar(file=open(os.devnull, "w")).attach(trainer, output_transform=lambda loss: {"loss": loss})
        rows = open(folder / "history.csv", "w", newline="")
        writer = csv.writer(rows)

        def write_row(e):
            writer.writerow([trainer.state.epoch, *e.state.metrics.values()])
            rows.flush()
        evaluator.add_event_handler(Events.COMPLETED, write_row)
    times = {}
    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda _: times.setdefault("start", time.perf_counter()))
    trainer.add_event_handler(Events.COMPLETED, lambda _: times.setdefault("end", time.perf_counter()))
    trainer.run(train_loader, max_epochs=epochs + 1)
    elapsed = times["end"] - times["start"]
    if wired:
        tb.close()
    return elapsed, accuracy(model, val_loader)


def monitored(features: int, epochs: int, tb_every_iteration: bool, workdir: Path, every_epoch: bool = False):
    from ignite.engine import Events
    from ignite.metrics import Accuracy, Loss

    import monitor

    model, (train_loader, val_loader) = model_for(features), loaders(features)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    run = monitor.attach_monitoring(
        trainer, evaluator, val_loader, run_dir=Path(tempfile.mkdtemp(dir=workdir)) / "run",
        objective=monitor.Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer},
        early_stopping=monitor.EarlyStopping(patience=1000),
        checkpoints=monitor.Checkpoints(restore_best=False, every=Events.EPOCH_COMPLETED if every_epoch else None),
        console=monitor.Console(log_every=1 if tb_every_iteration else 10, tqdm_kwargs={"file": open(os.devnull, "w")}),
    )
    times = {}
    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda _: times.setdefault("start", time.perf_counter()))
    # After monitor's own COMPLETED handler, which waits for every background write to be on disk.
    trainer.add_event_handler(Events.COMPLETED, lambda _: times.setdefault("end", time.perf_counter()))
    with run:
        trainer.run(train_loader, max_epochs=epochs + 1)
    return times["end"] - times["start"], accuracy(model, val_loader)


def lightning_run(features: int, epochs: int, tb_every_iteration: bool, workdir: Path):
    """PyTorch Lightning with the same features: EarlyStopping, ModelCheckpoint (best 3 + last), CSV and
    TensorBoard loggers, the TQDM progress bar (to a null stream)."""
    import contextlib
    import warnings

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    model, (train_loader, val_loader) = model_for(features), loaders(features)
    loss_fn = nn.CrossEntropyLoss()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch, _):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = loss_fn(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
            return loss

        def validation_step(self, batch, _):  # type: ignore[no-untyped-def]
            x, y = batch
            out = self.net(x)
            self.log("val_loss", loss_fn(out, y), on_epoch=True)
            self.log("val_accuracy", (out.argmax(1) == y).float().mean(), on_epoch=True)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)

    times: dict[str, float] = {}

    class Timer(L.Callback):
        def on_train_epoch_start(self, trainer, _):  # type: ignore[no-untyped-def]
            if trainer.current_epoch == 1:
                times["start"] = time.perf_counter()

        def on_train_end(self, trainer, _):  # type: ignore[no-untyped-def]
            times["end"] = time.perf_counter()

    folder = Path(tempfile.mkdtemp(dir=workdir))
    trainer = L.Trainer(
        max_epochs=epochs + 1, accelerator="cpu", devices=1, default_root_dir=folder,
        logger=[CSVLogger(folder), TensorBoardLogger(folder)], log_every_n_steps=1 if tb_every_iteration else 10,
        callbacks=[EarlyStopping("val_loss", patience=1000), ModelCheckpoint(monitor="val_loss", save_top_k=3,
                   save_last=True), TQDMProgressBar(), Timer()],
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), train_loader, val_loader)
    return times["end"] - times["start"], accuracy(model, val_loader)


def lightning_available() -> bool:
    try:
        import lightning  # noqa: F401
        return True
    except ImportError:
        return False


WORKLOADS = {
    "case-study MLP 784-100-100-2": (784, False),
    "tiny MLP 10-16-2": (10, False),
    "MLP + train loss to TensorBoard every iteration": (784, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4, help="measured epochs per repetition")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench_overhead-"))
    print(f"torch {torch.__version__}, 1 thread; {args.repeats} interleaved repetitions of {args.epochs} epochs; "
          f"per-epoch times")
    for workload, (features, tb_every) in WORKLOADS.items():
        accuracies: dict[str, float] = {}

        def variant(name, func, features=features, tb_every=tb_every, accuracies=accuracies, **kwargs):
            def run() -> float:
                elapsed, acc = func(features, args.epochs, tb_every, workdir, **kwargs)
                accuracies.setdefault(name, acc)
                assert abs(accuracies[name] - acc) < 1e-9, f"{name} is not deterministic"
                return elapsed / args.epochs
            return run

        variants = {
            "raw loop": variant("raw loop", raw_loop),
            "raw loop + tutorial's monitoring": variant("raw loop + tutorial's monitoring", raw_loop, tutorial=True),
            "Ignite wired by hand": variant("Ignite wired by hand", ignite_engine, wired=True),
            "Ignite engine + metrics alone": variant("Ignite engine + metrics alone", ignite_engine),
            "monitor (everything on)": variant("monitor (everything on)", monitored),
            "monitor, last checkpoint every epoch": variant("monitor, last checkpoint every epoch", monitored,
                                                            every_epoch=True),
        }
        if lightning_available():
            variants["PyTorch Lightning"] = variant("PyTorch Lightning", lightning_run)
        times = interleaved(variants, args.repeats)
        print(f"\n{workload}")
        print(ratio_table(times, "raw loop"))
        spread = max(accuracies.values()) - min(accuracies.values())
        print(f"  final validation accuracy: {min(accuracies.values()):.4f} (spread {spread:.1e} across variants)")
        if not lightning_available():
            print("  PyTorch Lightning: not installed (pip install -e '.[bench]' to add its column)")


if __name__ == "__main__":
    main()
