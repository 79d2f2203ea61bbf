"""monitor export: the best model as one plain state_dict file, checked whole before it is written."""
import pytest
import torch

from monitor.review import export_best, load_run
from monitor.review.cli import main
from tests.conftest import tiny_setup
from tests.runs import start


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "run"
    start(path)
    return path


def test_the_exported_best_loads_into_a_fresh_model_and_gives_the_runs_best_value(finished, tmp_path, capsys):
    assert main(["export", str(finished), "-o", str(tmp_path / "best.pt")]) == 0
    assert "load it with model.load_state_dict" in capsys.readouterr().out
    s = tiny_setup(lr=0.5)  # a new model of the same architecture
    s["model"].load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    assert s["evaluator"].run(s["val_loader"]).metrics["loss"] == pytest.approx(load_run(finished).best["value"])


def test_a_damaged_best_checkpoint_is_refused_and_nothing_is_written(finished, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    best = load_run(copy).best["checkpoint"]
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    best.write_bytes(bytes(data))
    assert main(["export", str(copy), "-o", str(tmp_path / "best.pt")]) == 2
    assert f"The best checkpoint {str(best)!r} is damaged" in capsys.readouterr().err
    assert not (tmp_path / "best.pt").exists()


def test_a_run_without_a_best_checkpoint_says_so(tmp_path):
    path = tmp_path / "run"
    start(path, crash_at_iteration=2)  # killed before its first validation
    with pytest.raises(ValueError, match="has no best checkpoint to export"):
        export_best(path, tmp_path / "best.pt")
