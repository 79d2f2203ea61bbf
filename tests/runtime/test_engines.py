import math

import torch
from ignite.engine import Events

from tests.conftest import tiny_setup


def test_build_trainers_loss_on_the_cpu_is_the_steps_number_as_ignites_own_trainer_gives():
    # On the CPU the step hands out the loss as a float (read in the step, where it is cheapest);
    # it is the loss the step trained on, the one the model gives on that batch before its update.
    s = tiny_setup()
    model, loss_fn, trainer = s["model"], s["loss_fn"], s["trainer"]
    seen = []

    @trainer.on(Events.ITERATION_STARTED)
    def before(engine):
        x, y = engine.state.batch
        with torch.no_grad():
            seen.append(loss_fn(model(x), y).item())

    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run(s["train_loader"], max_epochs=1)
    assert all(type(out["loss"]) is float and set(out) == {"loss"} for out in outputs)
    assert all(math.isclose(out["loss"], loss, rel_tol=1e-5) for out, loss in zip(outputs, seen, strict=True))
