import math

import torch
from ignite.engine import Engine

from monitor import StopReason, attach_train_loss


def run_losses(losses, epochs=1, check_every=10):
    def step(engine, batch):
        return {"loss": torch.tensor(batch)}

    trainer = Engine(step)
    tracker = attach_train_loss(trainer, check_every=check_every)
    trainer.run(losses, max_epochs=epochs)
    return trainer, tracker


def test_epoch_mean_of_the_training_loss():
    _, tracker = run_losses([1.0, 2.0, 3.0, 6.0])
    assert tracker.epoch_mean == 3.0


def test_nan_loss_stops_training_with_its_reason():
    trainer, tracker = run_losses([1.0, math.nan, 1.0], epochs=5)
    assert tracker.stop_reason is StopReason.NONFINITE_LOSS
    assert trainer.state.epoch == 1


def test_nan_is_caught_on_checked_iterations_within_the_epoch():
    losses = [1.0] * 5 + [math.inf] + [1.0] * 94
    trainer, tracker = run_losses(losses, check_every=10)
    assert tracker.stop_reason is StopReason.NONFINITE_LOSS
    assert trainer.state.iteration == 10  # stopped at the first check after the inf, not at epoch end


def test_plain_float_outputs_work_too():
    trainer = Engine(lambda e, b: b)
    tracker = attach_train_loss(trainer)
    trainer.run([0.5, 1.5], max_epochs=1)
    assert tracker.epoch_mean == 1.0
