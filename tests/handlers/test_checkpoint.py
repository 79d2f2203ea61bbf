import math

import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint
from torch import nn

from monitor import Objective
from monitor.compose.rundir import load_checkpoint
from monitor.handlers import BestTracker, DurableDiskSaver, attach_best_checkpoint
from monitor.handlers.checkpoint import restore_best_weights
from tests.conftest import stub_engine


def run_best_checkpoint(tmp_path, values, n_saved=2, mode="min"):
    trainer, evaluator = stub_engine(), stub_engine()
    model = nn.Linear(2, 1)
    best = BestTracker(Objective("loss", mode=mode), trainer)
    evaluator.add_event_handler(Events.COMPLETED, best)
    ckpt = attach_best_checkpoint(evaluator, trainer, best, {"model": model}, tmp_path, n_saved=n_saved)
    for epoch, value in enumerate(values, start=1):
        trainer.state.epoch = epoch
        evaluator.state.metrics = {"loss": value}
        with torch.no_grad():
            model.bias.fill_(epoch)  # tag the weights with their epoch
        evaluator.fire_event(Events.COMPLETED)
    return ckpt, best, model


def test_keeps_the_best_k_with_epoch_and_score_in_the_name(tmp_path):
    ckpt, best, _ = run_best_checkpoint(tmp_path, [0.9, 0.5, 0.7, 0.4, 0.6])
    names = sorted(p.name for p in tmp_path.glob("best_*.pt"))
    assert names == ["best_epoch=2_val_loss=0.5000.pt", "best_epoch=4_val_loss=0.4000.pt"]
    assert best.best_epoch == 4
    assert ckpt.last_checkpoint == tmp_path / "best_epoch=4_val_loss=0.4000.pt"


def test_nan_never_enters_best_k_and_better_files_are_still_saved(tmp_path):
    # Ignite 0.5.5 alone keeps a NaN-scored file and then never saves a better one.
    ckpt, best, _ = run_best_checkpoint(tmp_path, [0.9, math.nan, 0.5], n_saved=1)
    assert [p.name for p in tmp_path.glob("best_*.pt")] == ["best_epoch=3_val_loss=0.5000.pt"]
    assert best.best_value == 0.5


def test_restore_best_loads_the_best_epoch_weights(tmp_path):
    ckpt, _, model = run_best_checkpoint(tmp_path, [0.9, 0.3, 0.7])
    assert model.bias.item() == 3
    assert restore_best_weights(ckpt, model) == tmp_path / "best_epoch=2_val_loss=0.3000.pt"
    assert model.bias.item() == 2


def test_the_old_file_is_deleted_only_after_the_new_one_is_on_disk(tmp_path):
    saver = DurableDiskSaver(tmp_path)
    seen = []
    real_save = torch.save

    def spy_save(obj, f, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.glob("*.pt")))
        real_save(obj, f, **kwargs)

    model = nn.Linear(1, 1)
    ckpt = Checkpoint({"model": model}, saver, n_saved=1)
    engine = stub_engine()
    for iteration in (1, 2):
        engine.state.iteration = iteration
        torch_save = torch.save
        try:
            torch.save = spy_save
            ckpt(engine)
        finally:
            torch.save = torch_save
    assert seen[1] == ["model_1.pt"]  # still there while model_2.pt is being written
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["model_2.pt"]


def test_stale_temp_files_from_a_killed_save_are_removed(tmp_path):
    (tmp_path / ".tmp-last_epoch=3.pt.abcd").write_bytes(b"half")
    DurableDiskSaver(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_no_partial_file_and_the_previous_intact(tmp_path):
    saver = DurableDiskSaver(tmp_path)
    saver({"w": torch.ones(1)}, "a.pt")

    class Boom:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    try:
        saver({"w": Boom()}, "a.pt")
    except OSError as e:
        assert e.errno == 28
    else:
        raise AssertionError("the save should fail")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "manifest.json"]
    assert load_checkpoint(tmp_path / "a.pt")["w"].item() == 1.0  # whole, and matching its manifest entry


def test_attach_restore_best_loads_the_best_weights_when_training_completes(tmp_path):
    from monitor.handlers.checkpoint import attach_restore_best

    ckpt, _, model = run_best_checkpoint(tmp_path, [0.9, 0.3, 0.7])
    trainer = stub_engine()
    attach_restore_best(trainer, ckpt, model)
    trainer.fire_event(Events.COMPLETED)
    assert model.bias.item() == 2


def test_a_background_save_keeps_tied_weights_tied_and_the_state_dict_metadata(tmp_path):
    from monitor.store.writer import OrderedWriter

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.out, self.norm = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False), nn.BatchNorm1d(3)
            self.out.weight = self.embed.weight

    model, writer, engine = Tied(), OrderedWriter(), stub_engine()
    engine.state.iteration = 1
    Checkpoint({"model": model}, DurableDiskSaver(tmp_path, writer=writer), n_saved=1)(engine)
    with torch.no_grad():
        model.embed.weight.add_(1.0)  # training goes on while the file is written
    writer.close()
    saved = load_checkpoint(next(tmp_path.glob("*.pt")))
    assert saved["embed.weight"].data_ptr() == saved["out.weight"].data_ptr()  # still one tensor
    assert torch.equal(saved["embed.weight"] + 1.0, model.embed.weight)  # the state when saved
    assert saved._metadata == model.state_dict()._metadata  # versions, e.g. BatchNorm's
    Tied().load_state_dict(saved)
