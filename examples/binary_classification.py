"""The tutorial's case study: early stopping and best checkpoints for an MLP on a two-class problem.

5000 samples of 784 features (made here, with a fixed seed: nothing is downloaded), 70/30 split,
MLP 784-100-100-2 with ReLU, CrossEntropyLoss, SGD lr 0.01 momentum 0.9, patience 10, up to 1000
epochs. The features are noisy and 10% of the labels are flipped, so after about 20 epochs the
network starts fitting noise: validation loss turns up and early stopping fires.

    python examples/binary_classification.py                       # -> reports/binary_classification
    python examples/binary_classification.py --run-dir reports/try2 --patience 5 --seed 1
    python examples/binary_classification.py --resume              # continue a killed run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import monitor

N_SAMPLES, N_FEATURES, N_LATENT, LABEL_NOISE, SCALE = 5000, 784, 10, 0.1, 0.05


def make_data(seed: int) -> tuple[TensorDataset, TensorDataset]:
    """The two-class problem, split 70/30.

    784 features are noisy mixtures of 10 hidden factors (scaled small, like pixel intensities); the
    class is a non-linear rule on the factors, and 10% of the labels are flipped.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N_SAMPLES, N_LATENT, generator=g)
    mixing = torch.randn(N_LATENT, N_FEATURES, generator=g) / N_LATENT**0.5
    x = SCALE * (z @ mixing + torch.randn(N_SAMPLES, N_FEATURES, generator=g))
    y = (z[:, 0] * z[:, 1] + z[:, 2] - 0.5 * z[:, 3] ** 2 + 0.5 > 0).long()
    flip = torch.rand(N_SAMPLES, generator=g) < LABEL_NOISE
    y[flip] = 1 - y[flip]
    n_train = int(0.7 * N_SAMPLES)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Gaussian noise of ``std`` added to each sample as it is loaded: a random transform, drawn from
    torch's RNG (in a DataLoader worker, the worker's own), as torchvision's are."""

    def __init__(self, data: TensorDataset, std: float) -> None:
        self.data, self.std = data, std

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[i]
        return x + self.std * torch.randn(x.shape), y


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="reports/binary_classification", help="where the run is written")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--checkpoint-every", type=checkpoint_every, default=None, metavar="WHEN",
                        help="'epoch', 'iteration:N' or seconds (default: monitor's budget, every 10 minutes)")
    parser.add_argument("--max-time", type=float, default=None, metavar="SECONDS",
                        help="stop after this much training (resumable), e.g. under a job time limit")
    parser.add_argument("--validate-every", type=int, default=None, metavar="N",
                        help="validate every N iterations instead of every epoch (long epochs)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--augment", type=float, default=None, metavar="STD",
                        help="add Gaussian noise of this std to each training sample as it is loaded")
    parser.add_argument("--loader-seed", type=int, default=None,
                        help="give the training DataLoader its own generator with this seed")
    parser.add_argument("--recovery", action="store_true",
                        help="roll back a NaN, a loss spike or a divergence, cut the rate and go on (monitor.Recovery)")
    parser.add_argument("--keep-every", type=int, default=None, metavar="N",
                        help="with --recovery: a good copy every N iterations (default: on a 1%% time budget)")
    parser.add_argument("--nan-at", type=int, default=None, metavar="ITERATION",
                        help="corrupt the batch of this iteration with NaN (to see --recovery at work)")
    return parser.parse_args(argv)


def checkpoint_every(text: str) -> object:
    """``epoch`` -> Events.EPOCH_COMPLETED, ``iteration:N`` -> every N iterations, else seconds."""
    if text == "epoch":
        return Events.EPOCH_COMPLETED
    if text.startswith("iteration:"):
        return Events.ITERATION_COMPLETED(every=int(text.split(":", 1)[1]))
    return float(text)


def main(argv: list[str] | None = None) -> monitor.compose.Monitor:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # the script seeds; the library never does
    train_set, val_set = make_data(args.seed)
    generator = None if args.loader_seed is None else torch.Generator().manual_seed(args.loader_seed)
    train_data = train_set if args.augment is None else Augmented(train_set, args.augment)
    train_loader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, generator=generator,
                              num_workers=args.num_workers)
    val_loader = DataLoader(val_set, batch_size=args.batch_size)

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    if args.nan_at is not None:
        @trainer.on(Events.GET_BATCH_COMPLETED)
        def corrupt(engine: Engine) -> None:  # a corrupt sample: NaN inputs, NaN loss, NaN weights after the step
            if engine.state.iteration + 1 == args.nan_at:
                x, y = engine.state.batch
                engine.state.batch = (x * float("nan"), y)

    run = monitor.attach_monitoring(
        trainer, evaluator, val_loader,
        run_dir=args.run_dir,
        objective=monitor.Objective("loss", mode="min"),
        to_save={"model": model, "optimizer": optimizer},
        early_stopping=monitor.EarlyStopping(patience=args.patience),
        checkpoints=monitor.Checkpoints(every=args.checkpoint_every),
        # default: a bar on a terminal only
        console=monitor.Console(tqdm_kwargs={"disable": True} if args.no_progress else None),
        record=monitor.Record(
            hparams={"lr": 0.01, "momentum": 0.9, "batch_size": args.batch_size, "hidden": [100, 100]}, seed=args.seed
        ),
        validate_on=Events.EPOCH_COMPLETED if args.validate_every is None
        else Events.ITERATION_COMPLETED(every=args.validate_every),
        max_time=args.max_time,
        parts=[monitor.Recovery(keep_every=args.keep_every)] if args.recovery else [],
        resume=args.resume,
        overwrite=args.overwrite,
    )
    with run:
        trainer.run(train_loader, max_epochs=args.max_epochs)
    return run


if __name__ == "__main__":
    run = main(sys.argv[1:])
    best = run.best
    reason = run.stop_reason.value if run.stop_reason else "-"
    found = "no validation yet" if best.best_value is None else \
        f"best val_loss {best.best_value:.4f} at epoch {best.best_epoch}"  # (stopped within epoch 1)
    print(f"Run written to {Path(run.run_dir)}: {run.status.value} ({reason}), {found}")
