"""Real clients read what monitor wrote: the TensorBoard app, and a browser opening the HTML report."""
import json
import re
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
def test_the_html_report_draws_interactive_charts_offline_and_a_click_hides_a_run_in_every_chart(resumed_run,
                                                                                                 tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(resumed_run, other)  # a second run, so that the page overlays two
    page = to_html([load_run(resumed_run), load_run(other)], title="browser check")
    # After load, the page reports in its title what was drawn, then a click on the first run in the
    # legend of the overlay and a switch to a log scale, as a user does them.
    probe = """<script>window.addEventListener('load', () => {
      const all = document.getElementById('all-runs');
      const drawn = [...document.querySelectorAll('.monitor-charts')].map(c => c.dataset.drawn).join(',');
      const canvases = document.querySelectorAll('.monitor-charts canvas').length;
      all.querySelector('.u-legend .u-series:nth-child(2) th').dispatchEvent(new MouseEvent('click', {bubbles: true}));
      const hidden = all.monitor.plots().map(p => p.series[1].show ? 'shown' : 'hidden').join(',');
      const log = all.querySelector('[name=log]');
      log.checked = true;
      log.dispatchEvent(new Event('change', {bubbles: true}));
      const scale = all.monitor.plots().map(p => p.scales.y.distr).join(',');
      const still = all.monitor.plots()[0].series[1].show ? 'shown' : 'hidden';
      document.title = `DRAWN ${drawn} CANVASES ${canvases} CLICK ${hidden} LOG ${scale} AFTER ${still}` +
        ` ROWS ${document.querySelectorAll('table.runs tbody tr').length}` +
        (document.documentElement.scrollWidth <= window.innerWidth ? ' FITS' : ' TOO-WIDE');
    });</script></body>"""
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", probe))
    profile = tmp_path / "profile"
    # No network: a page that fetched its library would draw nothing here.
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size=1400,900"]
    dom = subprocess.run([*args, "--dump-dom", Path(path).as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    charts = 4  # val_loss, train_loss, lr and the chosen column, in the overlay and in each run's section
    assert title is not None, dom.stderr[-2000:]
    assert title[1] == (f"DRAWN {charts},{charts},{charts} CANVASES {3 * charts} CLICK hidden,hidden,hidden,hidden "
                        f"LOG 3,3,3,3 AFTER hidden ROWS 2 FITS")
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


@pytest.mark.skipif(chromium() is None, reason="no chromium on this machine (Debian package 'chromium')")
def test_a_sweep_page_colours_and_filters_runs_by_a_hyper_parameter_and_plots_each_best_against_it(resumed_run,
                                                                                                   tmp_path):
    runs = []
    for name, lr in (("a", 0.1), ("b", 0.1), ("c", 0.01)):  # three runs of a sweep over lr
        copy = tmp_path / name
        shutil.copytree(resumed_run, copy)
        record = json.loads((copy / "run.json").read_text())
        record.update(name=name, hparams={**(record.get("hparams") or {}), "lr": lr})
        (copy / "run.json").write_text(json.dumps(record))
        runs.append(load_run(copy))
    page = to_html(runs, title="sweep check")
    # After load: the sweep view's charts; then the runs coloured by lr (a and b share a hue, c has
    # another), then only lr = 0.01 shown, as a user picks them.
    probe = """<script>window.onerror = m => { document.title = 'ERROR ' + m; };
    window.addEventListener('load', () => {
      const all = document.getElementById('all-runs');
      const sweep = all.dataset.sweep + ':' + [...all.querySelectorAll('.sweep h4')].map(h => h.textContent).join('|');
      const pick = (name, value) => { const s = all.querySelector(`[name=${name}]`); s.value = value;
                                      s.dispatchEvent(new Event('change', {bubbles: true})); };
      pick('group', 'lr');
      const hue = i => all.monitor.colours()[i].match(/hsl\\((\\d+)/)[1];
      const same = hue(0) === hue(1) ? 'same' : 'differ', other = hue(0) === hue(2) ? 'same' : 'differ';
      pick('only', JSON.stringify(['lr', '0.01']));
      const shown = all.monitor.plots().map(p => p.series.slice(1).map(s => s.show ? 1 : 0).join('')).join(',');
      document.title = `SWEEP ${sweep} AB ${same} AC ${other} ONLY ${shown}`;
    });</script></body>"""
    path = tmp_path / "sweep.html"
    path.write_text(page.replace("</body>", probe))
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--proxy-server=http://127.0.0.1:9",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--window-size=1400,900"]
    dom = subprocess.run([*args, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title is not None, dom.stderr[-2000:]
    assert title[1] == "SWEEP 1:best val_loss by lr AB same AC differ ONLY " + ",".join(["001"] * 5)
