"""The README's example: a model, an optimizer, a loss and two loaders, monitored with defaults only.

    .venv/bin/python examples/quickstart.py [run_dir]      # default reports/quickstart
"""
import sys

import torch
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import monitor

torch.manual_seed(0)
x = torch.randn(400, 8)
y = (x[:, 0] + torch.randn(400) > 0).long()                         # a noisy two-class problem
train_loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=16, shuffle=True)
val_loader = DataLoader(TensorDataset(x[300:], y[300:]), batch_size=50)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()

trainer = monitor.build_trainer(model, optimizer, loss_fn)          # plain Ignite engines
evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
run = monitor.attach_monitoring(
    trainer, evaluator, val_loader, run_dir=sys.argv[1] if len(sys.argv) > 1 else "reports/quickstart",
    objective=monitor.Objective("loss", mode="min"),                # the one definition of "better"
    to_save={"model": model, "optimizer": optimizer},               # + a scheduler, if you have one
)
with run:                                                           # early stopping: patience 10
    trainer.run(train_loader, max_epochs=100)
print(monitor.load_run(run.run_dir).summary())
