"""Attach monitor to engines you wrote yourself: any trainer whose output holds the loss will do.

    python examples/own_engines.py --run-dir reports/own_engines
"""
from __future__ import annotations

import argparse

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import monitor


def main(argv: list[str] | None = None) -> monitor.compose.Monitor:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="reports/own_engines")
    parser.add_argument("--max-epochs", type=int, default=50)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x = torch.randn(600, 20)
    y = (x[:, :3].sum(dim=1) + 0.8 * torch.randn(600) > 0).long()
    train_loader = DataLoader(TensorDataset(x[:400], y[:400]), batch_size=32, shuffle=True)
    val_loader = DataLoader(TensorDataset(x[400:], y[400:]), batch_size=100)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()

    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}  # monitor reads output["loss"] (a plain loss works too)

    def eval_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            return model(batch[0]), batch[1]

    trainer, evaluator = Engine(train_step), Engine(eval_step)
    Accuracy().attach(evaluator, "accuracy")
    Loss(loss_fn).attach(evaluator, "loss")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())  # plain Ignite, as ever

    run = monitor.attach_monitoring(
        trainer, evaluator, val_loader, run_dir=args.run_dir, overwrite=True,
        objective=monitor.Objective("accuracy", mode="max", threshold=0.005),
        to_save={"model": model, "optimizer": optimizer, "scheduler": scheduler},
        early_stopping=monitor.EarlyStopping(patience=5), console=monitor.Console(tqdm_kwargs={"disable": True}),
    )
    with run:
        trainer.run(train_loader, max_epochs=args.max_epochs)
    return run


if __name__ == "__main__":
    run = main()
    best = "no validation yet" if run.best.best_value is None else \
        f"best val_accuracy {run.best.best_value:.3f} at epoch {run.best.best_epoch}"
    print(f"Run written to {run.run_dir}: {best}")
