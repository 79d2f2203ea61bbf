import math

import pytest
import torch
from ignite.engine import Engine, Events

from monitor.core import StopReason
from monitor.handlers import attach_train_loss


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


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_loss_among_finite_ones_stops_at_the_next_check(bad):
    # build_trainer's CPU output, {"loss": float}: the finite ones are summed without a check between
    losses = [0.5] * 12 + [bad] + [0.5] * 187
    trainer = Engine(lambda e, b: {"loss": b})
    tracker = attach_train_loss(trainer, check_every=10)
    trainer.run(losses, max_epochs=1)
    assert tracker.stop_reason is StopReason.NONFINITE_LOSS
    assert trainer.state.iteration == 20


def test_the_mean_of_many_number_losses_is_their_mean():
    losses = [float(i % 7) / 3 for i in range(203)]  # several folds of the list and a rest
    trainer = Engine(lambda e, b: {"loss": b})
    tracker = attach_train_loss(trainer, check_every=10)
    means = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=150), lambda _: means.append(tracker.running_mean()))
    trainer.run(losses, max_epochs=1)
    assert means == [pytest.approx(sum(losses[:150]) / 150, rel=1e-12)]
    assert tracker.epoch_mean == pytest.approx(sum(losses) / len(losses), rel=1e-12)


def test_plain_float_outputs_work_too():
    trainer = Engine(lambda e, b: b)
    tracker = attach_train_loss(trainer)
    trainer.run([0.5, 1.5], max_epochs=1)
    assert tracker.epoch_mean == 1.0



def f32(x):
    return torch.tensor(x).item()


def scripted(losses, epochs, check_every=3):
    """A trainer whose steps return ``losses`` in turn, ``len(losses) // epochs`` steps per epoch."""
    data = iter(losses)
    trainer = Engine(lambda e, b: {"loss": torch.tensor(next(data))})
    tracker = attach_train_loss(trainer, check_every=check_every)
    spikes = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: spikes.append(tracker.spike))
    return trainer, tracker, spikes, range(len(losses) // epochs)


def test_the_spike_is_the_epochs_highest_step_loss_over_the_runs_first():
    # Epoch 1 blows up for two steps, which its mean (1.26) hides; epoch 2 is calm; epoch 3 has a NaN
    # step (left out of the highest: the NaN check has it).
    epoch1 = [0.7, 0.6, 0.5, 6.3, 2.1, 0.5, 0.5, 0.5, 0.5, 0.4]
    epoch2 = [0.45, 0.42, 0.4, 0.38, 0.36, 0.35, 0.34, 0.33, 0.32, 0.31]
    trainer, tracker, spikes, data = scripted(epoch1 + epoch2, epochs=2)
    trainer.run(data, max_epochs=2)
    assert spikes == [f32(6.3) / f32(0.7), f32(0.45) / f32(0.7)]


def test_the_spike_survives_a_resume_mid_epoch():
    losses = [0.7, 0.6, 5.0, 0.5, 0.4, 0.4, 0.3, 0.3]
    trainer, _, whole, data = scripted(losses, epochs=2)
    trainer.run(data, max_epochs=2)
    trainer, tracker, _, data = scripted(losses, epochs=2)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    trainer.run(data, max_epochs=2)
    state, saved = trainer.state_dict(), tracker.state_dict()
    trainer, tracker, resumed, data = scripted(losses[3:], epochs=1)  # the steps not yet trained
    tracker.load_state_dict(saved)
    trainer.load_state_dict({**state, "epoch_length": 4})
    trainer.run(range(4), max_epochs=2)
    assert resumed == whole  # the blow-up before the checkpoint is in epoch 1's spike



def test_losses_kept_on_their_device_give_what_losses_read_at_once_give(monkeypatch):
    # On a GPU the losses stay on the device and are summed in folds (no host sync per step); on the
    # CPU they are read at once. Both must give the same mean, spike, NaN stop and resumed state.
    losses = [0.7, 0.6, 0.5, 6.3, 2.1, 0.5, math.nan] + [0.4] * 70 + [0.3, 0.2]

    def observe():
        trainer, tracker, spikes, data = scripted(losses[:6] + losses[7:], epochs=1, check_every=4)
        means = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=5), lambda _: means.append(tracker.running_mean()))
        trainer.run(data, max_epochs=1)
        nan_trainer, nan_tracker = run_losses(losses, epochs=2, check_every=10)
        return means, spikes, tracker.state_dict(), nan_tracker.stop_reason, nan_trainer.state.iteration

    read_at_once = observe()
    monkeypatch.setattr("monitor.handlers.loss.TrainLoss.read_cpu_as_numbers", False)
    kept_on_device = observe()
    assert kept_on_device[0] == pytest.approx(read_at_once[0], rel=1e-6)  # float32 sums against float64
    assert kept_on_device[1] == pytest.approx(read_at_once[1], rel=1e-6)
    assert kept_on_device[2]["count"] == read_at_once[2]["count"] == 78
    assert kept_on_device[3:] == read_at_once[3:] == (StopReason.NONFINITE_LOSS, 10)


def test_a_handlers_own_cadence_that_disagrees_with_the_step_it_joins_is_refused():
    from ignite.engine import Engine

    from monitor.handlers.step import StepWork

    trainer = Engine(lambda e, b: {"loss": 0.5})
    step = StepWork(log_every=10).attach(trainer)
    with pytest.raises(ValueError, match="check_every=5 disagrees with step's log_every=10"):
        attach_train_loss(trainer, check_every=5, step=step)
    attach_train_loss(trainer, check_every=10, step=step)  # the same: one setting
    with pytest.raises(ValueError, match="check_every should be a positive integer, got 0"):
        attach_train_loss(Engine(lambda e, b: None), check_every=0)


def test_a_loss_tensor_the_step_changes_in_place_is_said_and_copied_from_then_on(caplog):
    # Losses are summed every few steps: a step that hands back one tensor, changed in place, would
    # have its earlier values counted as its latest. Monitor says so at the first sum and copies
    # each step's loss from there, so the next epoch's mean is right.
    shared = torch.zeros(())

    def step(engine, batch):
        return {"loss": shared.fill_(batch)}

    trainer = Engine(step)
    tracker = attach_train_loss(trainer, check_every=5)
    means = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: means.append(tracker.epoch_mean))
    with caplog.at_level("WARNING", logger="monitor.handlers.loss"):
        trainer.run([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], max_epochs=2)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "same loss tensor object at several of the last 5 steps" in said[0]
    assert means[1] == 5.5  # every step's own value

    caplog.clear()
    with caplog.at_level("WARNING", logger="monitor.handlers.loss"):
        _, fresh = run_losses([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], check_every=5)
    assert fresh.epoch_mean == 3.5 and not caplog.records
