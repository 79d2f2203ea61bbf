"""The monitor command: report, compare (globs), plot, html, formats, one-line errors."""
import json
import subprocess
import sys

import pytest

from monitor.review.cli import main
from tests.runs import start


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    start(root / "a", patience=None, max_epochs=3)
    start(root / "b", patience=None, max_epochs=5)
    (root / "README.md").write_text("not a run")
    return root


def test_report_prints_the_summary(two_runs, capsys):
    assert main(["report", str(two_runs / "a")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run         a  (") and "status      completed  stop reason: max_epochs" in out


def test_compare_expands_globs_and_skips_plain_files(two_runs, capsys):
    assert main(["compare", str(two_runs / "*")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:5] == ["rank", "name", "seed", "status", "stop_reason"]
    assert sorted(line.split()[1] for line in lines[1:]) == ["a", "b"]
    assert "skipping" in captured.err and "README.md" in captured.err


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown"])
def test_machine_formats(two_runs, capsys, fmt):
    assert main(["compare", str(two_runs / "a"), str(two_runs / "b"), "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        rows = json.loads(out)
        assert {r["name"] for r in rows} == {"a", "b"} and all("best_value" in r for r in rows)
    elif fmt == "csv":
        assert out.splitlines()[0].startswith("rank,name,seed,status,stop_reason,epochs,best_epoch")
        assert len(out.splitlines()) == 3
    else:
        assert out.splitlines()[1].startswith("|---|") and out.count("\n") == 4


def test_plot_and_html_write_their_files(two_runs, tmp_path, capsys):
    assert main(["plot", str(two_runs / "a"), str(two_runs / "b"), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert main(["html", str(two_runs / "a"), "-o", str(tmp_path / "r.html")]) == 0
    assert "<table" in (tmp_path / "r.html").read_text()


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"monitor: '{tmp_path}': is not a run (no run.json)\n"


def test_python_dash_m_monitor_works_the_same(two_runs):
    out = subprocess.run([sys.executable, "-m", "monitor", "report", str(two_runs / "b")],
                         capture_output=True, text=True, check=True).stdout
    assert "epochs      5" in out


def test_html_watch_keeps_the_page_of_a_live_run_current_and_stops_once_it_ended(two_runs, tmp_path):
    import os
    import shutil
    import socket
    import threading

    from monitor.review.cli import watch_html
    from monitor.store.layout import RunPaths

    run = tmp_path / "live"
    shutil.copytree(two_runs / "a", run)
    paths = RunPaths(run)
    record = json.loads(paths.record.read_text())
    paths.record.write_text(json.dumps({**record, "status": "running"}))  # a run still training, here:
    paths.lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # its holder alive
    page, said = tmp_path / "page.html", []
    watching = threading.Thread(target=lambda: said.append(
        watch_html([str(run)], page, title="watch", every_s=0.05, say=said.append)))
    watching.start()
    while not said:
        pass
    first = page.read_text()
    assert '<meta http-equiv="refresh" content="1">' in first and "Live: a still training; written at" in first
    paths.record.write_text(json.dumps(record))  # it ends: completed, the lock emptied
    paths.lock.write_text("")
    watching.join(timeout=30)
    assert not watching.is_alive() and said[-1].endswith("the runs have ended")
    last = page.read_text()
    assert "http-equiv" not in last and "The runs have ended" in last
    with pytest.raises(SystemExit):  # a bad interval is refused by name
        main(["html", str(run), "-o", str(page), "--watch", "x"])
    assert main(["html", str(run), "-o", str(page), "--watch", "0"]) == 2
