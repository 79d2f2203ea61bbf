"""The progress bar redraws by time, not per iteration."""
import io
import logging

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events

from monitor import Console, EarlyStopping
from monitor.handlers import attach_progress_bar


def redraws(refresh_s, iterations=200):
    out = io.StringIO()
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.5)})
    attach_progress_bar(engine, refresh_s=refresh_s, file=out, mininterval=0, disable=False)  # forced: not a tty
    engine.run(range(iterations), max_epochs=1)
    return out.getvalue().count("\r")


def test_a_fast_loop_is_redrawn_only_as_often_as_refresh_s_allows():
    assert redraws(refresh_s=0) >= 200  # every iteration
    assert redraws(refresh_s=3600) <= 10  # the first iteration and the end of the epoch (a few \r each)


def test_a_negative_refresh_is_refused_at_once():
    with pytest.raises(ValueError, match="refresh_s should be a number of seconds >= 0, got -1"):
        attach_progress_bar(Engine(lambda e, b: None), refresh_s=-1)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def console_run(tmp_path, stream, *, max_epochs=4, bar_file=None, level=logging.INFO, **kwargs):
    """A monitored tiny run whose log goes to ``stream`` (as the examples configure it) and whose bar to
    ``bar_file`` (None: tqdm's default decides)."""
    from monitor import Objective, attach_monitoring
    from tests.conftest import tiny_setup

    handler = logging.StreamHandler(stream)
    log = logging.getLogger("monitor")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(level)  # (not log.level = ...: the loggers' level cache would keep the old verdicts)
    log.propagate = False  # only this stream, not pytest's capture (which is no terminal)
    try:
        s = tiny_setup()
        tqdm_kwargs = {} if bar_file is None else {"file": bar_file, "mininterval": 0}
        run = attach_monitoring(
            s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
            objective=Objective("loss", mode="min"), to_save={"model": s["model"], "optimizer": s["optimizer"]},
            early_stopping=EarlyStopping(patience=2), console=Console(tqdm_kwargs=tqdm_kwargs), **kwargs,
        )
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=max_epochs)
        return run
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = True


def table_lines(text):
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]  # what a terminal shows of each line
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "iter"])
    return [line for line in lines[start:] if line.strip() and (line.split()[0] == "epoch" or line.split()[0].isdigit())]


def test_one_aligned_line_per_validation_with_the_new_best_marked(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    console_run(tmp_path, out, max_epochs=6, bar_file=io.StringIO())
    header, *rows = table_lines(out.getvalue())
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(rows) == len(history)
    assert header.split() == ["epoch", "iter", "train_loss", "val_accuracy", "val_loss", "lr", "time"]
    ends = [i + 1 for i, (a, b) in enumerate(zip(header, header[1:] + " ", strict=True)) if a != " " and b == " "]
    for row, (_, expected) in zip(rows, history.iterrows(), strict=True):
        row_ends = [i + 1 for i, (a, b) in enumerate(zip(row, row[1:] + " ", strict=True)) if a not in " *" and b in " *"]
        assert row_ends == ends  # every column ends where its header does
        assert row.split()[4].endswith("*") == bool(expected["is_best"])
        assert float(row.split()[4].rstrip("*")) == pytest.approx(expected["val_loss"], abs=1e-4)
    text = out.getvalue()
    assert "improved" not in text and "Best checkpoint" not in text and "no improvement" not in text  # DEBUG


def test_details_are_logged_at_debug(tmp_path):
    out = io.StringIO()
    console_run(tmp_path, out, level=logging.DEBUG)
    assert "improved" in out.getvalue() and "Best checkpoint" in out.getvalue()


def test_the_bar_is_cleared_around_each_line_on_a_terminal_so_no_residue_is_left(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    terminal = FakeTerminal()
    console_run(tmp_path, terminal, bar_file=terminal, validate_on=Events.ITERATION_COMPLETED(every=2))
    text = terminal.getvalue()
    assert "it/s" in text or "%|" in text  # a bar was drawn
    for line in text.split("\n"):
        shown = line.rsplit("\r", 1)[-1]
        if "val_loss" in line or shown.strip()[:1].isdigit():  # the header or a row
            assert "%|" not in shown and "Epoch" not in shown, repr(line)


def test_no_bar_when_the_output_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out, bar_file = io.StringIO(), io.StringIO()  # a file, a pipe, CI
    console_run(tmp_path, out, bar_file=bar_file)
    assert bar_file.getvalue() == "" and "\r" not in out.getvalue()


@pytest.mark.parametrize("no_color", [None, "1"])
def test_the_best_value_is_coloured_only_on_a_terminal_without_no_color(tmp_path, monkeypatch, no_color):
    if no_color:
        monkeypatch.setenv("NO_COLOR", no_color)
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    terminal, file = FakeTerminal(), io.StringIO()
    console_run(tmp_path / "t", terminal)
    console_run(tmp_path / "f", file)
    assert ("\x1b[32m" in terminal.getvalue()) is (no_color is None)
    assert "\x1b[" not in file.getvalue()
