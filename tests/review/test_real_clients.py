"""Real clients read what monitor wrote: the TensorBoard app, and a browser opening the HTML report."""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from monitor import Record
from monitor.review import load_run, to_html
from tests.runs import start


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, deadline, body=None):
    """GET ``url`` (or POST ``body`` as JSON), retried until the app answers or ``deadline`` passes."""
    request = url if body is None else urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "X-XSRF-Protected": "1"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    start(path, crash_at_iteration=14)  # a resume, so TensorBoard has points to purge
    start(path, resume=True)
    return path


def test_tensorboard_app_serves_the_history_values(resumed_run):
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(resumed_run / "tb"), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        base = f"http://127.0.0.1:{port}/data/plugin/scalars"
        while "val/loss" not in json.dumps(get_json(f"{base}/tags", deadline)):
            if time.monotonic() > deadline:
                pytest.fail("TensorBoard never listed val/loss")
            time.sleep(0.3)
        history = pd.read_csv(resumed_run / "history.csv")
        for tag, column in (("val/loss", "val_loss"), ("val/accuracy", "val_accuracy"), ("lr", "lr")):
            query = urllib.parse.urlencode({"run": ".", "tag": tag})
            points = get_json(f"{base}/scalars?{query}", deadline)  # [[wall_time, step, value], ...]
            assert [p[1] for p in points] == history["iteration"].tolist()
            assert [p[2] for p in points] == pytest.approx(history[column].tolist(), rel=1e-6)
    finally:
        app.terminate()
        app.wait(timeout=30)


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="no chromium on this machine (Debian package 'chromium')")
def test_the_html_report_shows_the_table_and_its_images_in_a_browser(resumed_run, tmp_path):
    page = to_html([load_run(resumed_run)], title="browser check")
    # After load, the page reports in its title whether every image decoded.
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
             " document.title = imgs.every(i => i.complete && i.naturalWidth > 0)"
             " ? 'IMAGES-OK ' + imgs.length + ' ROWS ' + document.querySelectorAll('table.runs tbody tr').length"
             " + (document.documentElement.scrollWidth <= window.innerWidth ? ' FITS' : ' TOO-WIDE')"
             " : 'IMAGES-BROKEN'; });</script></body>")
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", probe))
    profile = tmp_path / "profile"
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size=1400,900"]
    dom = subprocess.run([*args, "--dump-dom", Path(path).as_uri()], capture_output=True, text=True, timeout=120)
    # One run: its curves, one row; the page fits a 1400 px window (no horizontal scroll of the page).
    assert "<title>IMAGES-OK 1 ROWS 1 FITS</title>" in dom.stdout, dom.stderr[-2000:]
    assert "Stopped because" in dom.stdout and "Configuration" in dom.stdout and "Segments (2" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", Path(path).as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:4] == b"\x89PNG"


def test_tensorboard_hparams_dashboard_compares_runs_by_their_hyper_parameters(tmp_path):
    from monitor import Objective, attach_monitoring
    from tests.conftest import tiny_setup

    for name, lr in (("slow", 0.01), ("fast", 0.3)):
        s = tiny_setup(lr=lr)
        run = attach_monitoring(
            s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / name,
            objective=Objective("loss", mode="min"), to_save={"model": s["model"], "optimizer": s["optimizer"]},
            early_stopping=None, record=Record(hparams={"lr": lr, "hidden": [16]}, seed=3),
        )
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=4)
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        base = f"http://127.0.0.1:{port}/data/plugin/hparams"
        while True:
            experiment = get_json(f"{base}/experiment", deadline, {"experimentName": ""})
            if len(experiment.get("hparamInfos") or []) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"lr", "hidden", "seed"} <= hparams
        assert [m["name"]["tag"] for m in experiment["metricInfos"]] == ["hparams/best_val_loss"]
        groups = get_json(f"{base}/session_groups", deadline, {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                      "STATUS_RUNNING"],
            "colParams": [{"hparam": "lr"}, {"metric": {"tag": "hparams/best_val_loss"}}],
            "startIndex": 0, "sliceSize": 10,
        })["sessionGroups"]
        by_lr = {g["hparams"]["lr"]: g["metricValues"][0]["value"] for g in groups}
        for name, lr in (("slow", 0.01), ("fast", 0.3)):
            best = json.loads((tmp_path / name / "run.json").read_text())["best"]["value"]
            assert by_lr[lr] == pytest.approx(best, rel=1e-6)  # the best objective, by hyper-parameter
    finally:
        app.terminate()
        app.wait(timeout=30)
