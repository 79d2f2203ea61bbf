import pytest
import torch
from ignite.engine import Events
from torch import nn

import monitor
from monitor.handlers import LearningRates
from tests.conftest import own_step_trainer


def trainer_of(kind, model, optimizer):
    loss_fn = nn.MSELoss()
    if kind == "build_trainer":
        return monitor.build_trainer(model, optimizer, loss_fn)
    if kind == "build_trainer, accumulating 2 steps":
        return monitor.build_trainer(model, optimizer, loss_fn, gradient_accumulation_steps=2)
    return own_step_trainer(model, optimizer, loss_fn)


@pytest.mark.parametrize("kind", ["build_trainer", "build_trainer, accumulating 2 steps", "own step"])
def test_the_rates_are_the_last_optimizer_steps_and_stay_so_once_removed(kind):
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = trainer_of(kind, model, optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())  # before anyone reads
    rates = LearningRates(optimizer, trainer=trainer)
    assert rates.values() == {"lr": 1.0}  # before a step: the optimizer's
    batches = [(torch.ones(4, 2), torch.zeros(4, 1))] * 4
    trainer.run(batches, max_epochs=1)
    # the optimizer stepped at each iteration (at the 2nd and 4th when accumulating), after 3 halvings
    assert rates.values() == {"lr": 0.5 ** 3}
    rates.remove()
    rates.remove()
    trainer.run(batches, max_epochs=2)
    assert rates.values() == {"lr": 0.5 ** 3}  # the last step's it saw
    again = LearningRates(optimizer, trainer=trainer)  # a second monitoring of the trainer
    assert again.values() == {"lr": 0.5 ** 8}  # the optimizer's, not a step's from before it
