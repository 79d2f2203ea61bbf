"""The examples run as a user runs them, and leave complete run directories (the case study's runs forked
from a warm interpreter, tests/warm.py: the same script, seconds sooner)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from monitor.review.cli import main as cli_main
from tests import warm

pytestmark = pytest.mark.slow  # end to end, several seconds each: `make test-fast` leaves them out

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, fresh=True):
    if not fresh:
        done = warm.run([sys.executable, *args], cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    )


def test_case_study_stops_early_and_leaves_a_complete_run(tmp_path):
    run_dir = tmp_path / "case"
    out = run_script("examples/binary_classification.py", "--run-dir", str(run_dir), "--no-progress", fresh=False)
    record = json.loads((run_dir / "run.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    assert record["status"] == "early_stopped" and record["stop_reason"] == "patience_exhausted"
    assert len(history) == record["epochs_completed"] < 1000
    best_epoch = record["best"]["epoch"]
    assert record["epochs_completed"] == best_epoch + 10  # patience 10 after the last improvement
    assert history.loc[history["val_loss"].idxmin(), "epoch"] == best_epoch
    assert history["val_accuracy"].max() > 0.75  # it learned something before fitting the noise
    assert (run_dir / record["best"]["checkpoint"]).exists()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert f"best val_loss {record['best']['value']:.4f} at epoch {best_epoch}" in out.stdout


def test_case_study_resume_of_the_finished_run_trains_nothing(tmp_path):
    run_dir = tmp_path / "case"
    run_script("examples/binary_classification.py", "--run-dir", str(run_dir), "--no-progress", "--max-epochs", "3",
               fresh=False)
    history = (run_dir / "history.csv").read_bytes()
    out = run_script("examples/binary_classification.py", "--run-dir", str(run_dir), "--no-progress", "--resume",
                     "--max-epochs", "3", fresh=False)
    assert "already finished" in out.stderr and "max_epochs above 3" in out.stderr  # and how to go on
    assert (run_dir / "history.csv").read_bytes() == history


def test_own_engines_example_monitors_hand_built_engines(tmp_path, capsys):
    run_dir = tmp_path / "own"
    run_script("examples/own_engines.py", "--run-dir", str(run_dir))
    history = pd.read_csv(run_dir / "history.csv")
    assert history["lr"].iloc[0] == 3e-3 and history["lr"].iloc[-1] < 3e-3  # the user's scheduler ran
    assert cli_main(["report", str(run_dir)]) == 0
    assert "status      early_stopped" in capsys.readouterr().out


def test_report_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"monitor: {str(tmp_path / 'nope')!r}: no such run directory"


def test_sweep_example_runs_a_study_whose_trials_are_monitored_runs(tmp_path, capsys):
    pytest.importorskip("optuna")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import sweep

    study = sweep.main(["--folder", str(tmp_path / "sweep"), "--trials", "3", "--max-epochs", "6"])
    assert (tmp_path / "sweep" / "study.db").exists() and len(study.trials) == 3
    for trial in study.trials:
        record = json.loads((Path(trial.user_attrs["run_dir"]) / "run.json").read_text())
        assert record["status"] in ("completed", "early_stopped") and record["hparams"] == trial.params
    assert "Best trial:" in capsys.readouterr().out


def test_the_readmes_example_is_quickstart_py_and_stops_early_as_its_output_says(tmp_path):
    import re

    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"## Use it\n\n```python\n(.*?)```", readme, re.S)[1]
    script = (ROOT / "examples" / "quickstart.py").read_text()
    code = script[script.index("import torch"):]
    # The script takes its folder from the command line; the README names it.
    code = code.replace('sys.argv[1] if len(sys.argv) > 1 else "reports/quickstart"', '"reports/quickstart"')
    code = code.replace("monitor.load_run(run.run_dir)", 'monitor.load_run("reports/quickstart")')
    assert shown == code
    out = run_script("examples/quickstart.py", str(tmp_path / "quickstart"))
    record = json.loads((tmp_path / "quickstart" / "run.json").read_text())
    assert (record["status"], record["best"]["epoch"], record["epochs_completed"]) == ("early_stopped", 11, 21)
    for line in re.findall(r"^(?:status|best|checkpoint|at best)  +.*$", readme, re.M):  # the output shown
        assert line in out.stdout


def test_the_tutorials_monitored_run_stops_where_its_plain_loop_stops_with_the_same_best(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import from_a_loop

    plain = from_a_loop.plain_loop(str(tmp_path / "checkpoint.pt"))
    monitored = from_a_loop.monitored(str(tmp_path / "run"))
    assert monitored[0] == plain[0] and monitored[1] == pytest.approx(plain[1], rel=1e-6)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["epochs_completed"] == plain[0] + 10  # both waited the same 10 epochs past the best
