"""A small hyper-parameter sweep of the case study with Optuna: each trial is a monitored run, pruned
trials end cleanly (stop reason ``pruned``), and ``monitor compare`` ranks the study's runs.

The study is kept in SQLite in the sweep's folder (resume it by running the same command again);
nothing is downloaded. With ``--mlflow URI`` every trial is mirrored to an MLflow tracking server too.

    python examples/sweep.py                                   # -> reports/sweep/trial_0 ... and study.db
    python examples/sweep.py --trials 8 --folder reports/sweep2
    python examples/sweep.py --mlflow http://127.0.0.1:5000    # also in MLflow, experiment "sweep"
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import optuna
import torch
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binary_classification import make_data, make_model  # noqa: E402

import monitor  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="reports/sweep", help="where the trials' runs and study.db go")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlflow", default=None, metavar="URI", help="also mirror each trial to this MLflow server")
    return parser.parse_args(argv)


def trial_run(trial: optuna.trial.Trial, args: argparse.Namespace) -> float:
    """One trial: the case study at the rate and momentum Optuna suggests."""
    lr = trial.suggest_float("lr", 1e-3, 0.3, log=True)
    momentum = trial.suggest_float("momentum", 0.5, 0.95)
    torch.manual_seed(args.seed)
    train_set, val_set = make_data(args.seed)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    pruning = monitor.OptunaPruning(trial)
    parts: list[Any] = [pruning]
    if args.mlflow:
        parts.append(monitor.MLflow(args.mlflow, experiment=Path(args.folder).name))
    run = monitor.attach_monitoring(
        trainer, evaluator, DataLoader(val_set, batch_size=256),
        run_dir=Path(args.folder) / f"trial_{trial.number}", objective=monitor.Objective("loss", mode="min"),
        to_save={"model": model, "optimizer": optimizer}, overwrite=True,
        early_stopping=monitor.EarlyStopping(patience=args.patience),
        console=monitor.Console(tqdm_kwargs={"disable": True}),
        record=monitor.Record(hparams=dict(trial.params), seed=args.seed), parts=parts,
    )
    with run:
        trainer.run(DataLoader(train_set, batch_size=64, shuffle=True), max_epochs=args.max_epochs)
    return pruning.result(run)  # optuna.TrialPruned for a pruned trial


def main(argv: list[str] | None = None) -> optuna.Study:
    args = parse_args(argv)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="case_study", storage=f"sqlite:///{folder / 'study.db'}", load_if_exists=True,
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=5),
    )
    study.optimize(lambda trial: trial_run(trial, args), n_trials=args.trials)
    runs = [monitor.load_run(t.user_attrs["run_dir"]) for t in study.trials if "run_dir" in t.user_attrs]
    table = monitor.compare(runs)
    columns = ["rank", "name", "status", "stop_reason", "epochs", "best_value", "hp_lr", "hp_momentum"]
    print(table[columns].to_string(index=False))
    print(f"Best trial: {study.best_trial.number} (val_loss {study.best_value:.4f}); "
          f"compare them again with: monitor compare {folder}/trial_*")
    return study


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main(sys.argv[1:])
