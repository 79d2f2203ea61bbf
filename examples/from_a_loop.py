"""The getting-started tutorial (docs/getting-started.md): the case study as a plain PyTorch loop with
a hand-written early stopping, then the same training monitored.

    .venv/bin/python examples/from_a_loop.py plain         # the loop: prints one line per epoch, writes checkpoint.pt
    .venv/bin/python examples/from_a_loop.py monitored     # the same training under monitor: reports/from_a_loop

Both train the tutorial's MLP 784-100-100-2 (SGD lr 0.01 momentum 0.9) on the case study's data with
patience 10; they see the batches in the same order, so they stop at the same epoch with the same
best validation loss (``tests/test_examples.py`` checks it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binary_classification import make_data, make_model  # noqa: E402 (the case study's data and MLP)


def case_study() -> tuple[DataLoader, DataLoader, nn.Module, torch.optim.Optimizer, nn.Module]:
    """The case study's loaders, model, optimizer and loss, seeded: the same for both versions."""
    torch.manual_seed(0)
    train_set, val_set = make_data(0)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=64)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return train_loader, val_loader, model, optimizer, nn.CrossEntropyLoss()


def plain_loop(checkpoint: str = "checkpoint.pt", patience: int = 10) -> tuple[int, float]:
    """The tutorial's loop: train, validate, keep the best weights, stop after ``patience`` epochs
    without improvement. Returns the best epoch and its validation loss."""
    train_loader, val_loader, model, optimizer, loss_fn = case_study()

    best_loss, best_epoch, waited = float("inf"), 0, 0
    for epoch in range(1, 1001):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(loss_fn(model(x), y).item() * len(y) for x, y in val_loader) / len(val_loader.dataset)
        print(f"epoch {epoch}: val_loss {val_loss:.4f}")
        if val_loss < best_loss:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            torch.save(model.state_dict(), checkpoint)
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(torch.load(checkpoint))
    return best_epoch, best_loss


def monitored(run_dir: str = "reports/from_a_loop", patience: int = 10) -> tuple[int, float]:
    """The same training under monitor. Returns the best epoch and its validation loss."""
    from ignite.metrics import Accuracy, Loss

    import monitor

    train_loader, val_loader, model, optimizer, loss_fn = case_study()

    trainer = monitor.build_trainer(model, optimizer, loss_fn)  # the loop's inner part, as an Ignite Engine
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    run = monitor.attach_monitoring(
        trainer, evaluator, val_loader,
        run_dir=run_dir,
        objective=monitor.Objective("loss", mode="min"),      # what "better" means: a lower val_loss
        to_save={"model": model, "optimizer": optimizer},     # what a resume needs
        early_stopping=monitor.EarlyStopping(patience=patience),
        overwrite=True,                                       # replace an earlier run in run_dir
    )
    with run:
        trainer.run(train_loader, max_epochs=1000)
    return run.best.best_epoch, run.best.best_value  # the model now holds the best weights


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "monitored"
    if which not in ("plain", "monitored"):
        sys.exit(f"Argument should be 'plain' or 'monitored', got {which!r}.")
    epoch, value = plain_loop() if which == "plain" else monitored()
    print(f"best val_loss {value:.4f} at epoch {epoch}")
