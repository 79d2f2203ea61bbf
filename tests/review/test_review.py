"""load_run, compare, plots and HTML on real runs; one-line errors for folders that are not runs."""
import json

import pandas as pd
import pytest

from monitor import EarlyStopping, Record
from monitor.review import RunDirectoryError, compare, load_run, plot_runs, to_html
from tests.runs import start


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three finished runs with different learning rates, and one failed part-way."""
    from monitor import Objective, attach_monitoring
    from tests.conftest import tiny_setup

    paths = []
    for name, lr in (("slow", 0.01), ("fast", 0.5), ("medium", 0.1)):
        path = tmp_path_factory.mktemp("runs") / name
        s = tiny_setup(lr=lr)
        run = attach_monitoring(
            s["trainer"], s["evaluator"], s["val_loader"], run_dir=path, objective=Objective("loss", mode="min"),
            to_save={"model": s["model"], "optimizer": s["optimizer"]}, early_stopping=EarlyStopping(patience=3),
            record=Record(hparams={"lr": lr}),
        )
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=12)
        paths.append(path)
    failed = tmp_path_factory.mktemp("runs") / "failed"
    start(failed, crash_at_iteration=9)
    return [*paths, failed]


def test_load_run_gives_the_history_and_the_record(runs):
    run = load_run(runs[0])
    record = json.loads((runs[0] / "run.json").read_text())
    pd.testing.assert_frame_equal(run.history, pd.read_csv(runs[0] / "history.csv"))
    assert run.status == record["status"] and run.stop_reason == record["stop_reason"]
    assert run.best["epoch"] == record["best"]["epoch"] and run.best["checkpoint"].exists()
    assert run.best_row()["val_loss"] == record["best"]["value"]
    assert set(run.scalars["tag"]) == {"train/loss", "val/loss", "val/accuracy", "lr", "perf/samples_per_s",
                                       "perf/data_wait_frac", "hparams/best_val_loss"}


def test_summary_names_status_best_and_error(runs):
    text = load_run(runs[3]).summary()
    assert "status      failed  stop reason: failed" in text
    assert "error       RuntimeError: killed" in text
    best = load_run(runs[1]).best
    assert f"best        val_loss={best['value']:.6g} (min) at epoch {best['epoch']}" in load_run(runs[1]).summary()


def test_compare_ranks_runs_by_their_objective(runs):
    table = compare(load_run(p) for p in runs)
    # "failed" trained as "fast" did (same setup) until its crash, so they tie: one rank for both.
    assert table["rank"].tolist() == [1, 1, 3, 4]
    assert table["best_value"].is_monotonic_increasing  # min mode: lowest loss first
    assert set(table["name"]) == {"slow", "fast", "medium", "failed"}
    row = table.set_index("name").loc["fast"]
    run = load_run(runs[1])
    assert row["epochs"] == len(run.history) and row["best_epoch"] == run.best["epoch"]
    assert row["val_accuracy@best"] == run.best_row()["val_accuracy"]
    assert row["hp_lr"] == 0.5
    assert row["s_per_epoch"] == pytest.approx(run.history["epoch_s"].median())


def test_compare_of_a_hundred_long_runs_is_quick_enough_to_use(tmp_path):
    # Not a timed assertion (see benchmarks/): only that 100 runs of 1000 epochs load and rank.
    header = "epoch,iteration,elapsed_s,epoch_s,lr,train_loss,val_accuracy,val_loss,is_best\n"
    for i in range(100):
        folder = tmp_path / f"run{i:03d}"
        folder.mkdir()
        rows = "".join(f"{e},{e * 55},{e * 0.1},0.1,0.01,{1 / e},{0.5 + e / 4000},{1 / e + i / 1000},False\n"
                       for e in range(1, 1001))
        (folder / "history.csv").write_text(header + rows)
        (folder / "run.json").write_text(json.dumps({
            "format": 1, "name": folder.name, "status": "completed", "epochs_completed": 1000,
            "best": {"metric": "val_loss", "mode": "min", "value": 0.001 + i / 1000, "epoch": 1000},
        }))
    table = compare(load_run(p) for p in sorted(tmp_path.iterdir()))
    assert table["name"].tolist()[:3] == ["run000", "run001", "run002"] and len(table) == 100


def test_plot_writes_a_png_with_a_panel_per_metric(runs, tmp_path):
    figure = plot_runs([load_run(p) for p in runs], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles == ["loss", "val_accuracy", "lr"]


def test_html_is_self_contained_with_table_and_interactive_charts(runs):
    import json
    import re

    loaded = [load_run(p) for p in runs]
    page = to_html(loaded)
    assert page.startswith("<!DOCTYPE html>") and "<table" in page
    assert page.count("uPlot") >= 1 and page.count('class="monitor-charts"') == 1 + len(runs)  # all, then each
    assert not re.search(r"""(src|href)=["']?https?://""", page)  # nothing to fetch: the library is inlined
    data = json.loads(re.search(r'id="all-runs-data">(.*?)</script>', page)[1])
    assert [r["name"] for r in data["runs"]] == [run.name for run in loaded]
    assert data["charts"][0] == "val_loss" and "lr" in data["charts"]  # the objective's curve, the rate
    first = data["runs"][0]
    assert first["rows"]["val_loss"] == pytest.approx(loaded[0].history["val_loss"].tolist())
    assert {"best"} <= {e["kind"] for e in first["events"]}


def test_the_pages_chart_data_holds_what_a_sweep_is_read_by_and_the_range_a_rollback_undid(runs, tmp_path):
    import re
    import shutil

    rolled = tmp_path / "rolled"
    shutil.copytree(runs[0], rolled)
    record = json.loads((rolled / "run.json").read_text())
    record["recoveries"] = [{"epoch": 6, "iteration": 60, "reason": "nonfinite_loss", "rolled_back_to": 30,
                             "rolled_back_to_epoch": 3, "attempt": 1}]
    (rolled / "run.json").write_text(json.dumps(record))
    loaded = [load_run(p) for p in [*runs[:3], rolled]]
    data = json.loads(re.search(r'id="all-runs-data">(.*?)</script>', to_html(loaded))[1])
    assert data["varying"] == ["lr"]  # what differs between the runs: the sweep's one axis
    assert [r["hparams"]["lr"] for r in data["runs"]] == [0.01, 0.5, 0.1, 0.01]
    assert [r["best"] for r in data["runs"]] == pytest.approx([run.best["value"] for run in loaded])
    rollback = [e for e in data["runs"][3]["events"] if e["kind"] == "rollback"]
    assert rollback == [{"kind": "rollback", "epoch": 6, "from": 3, "label": "rollback (nonfinite_loss)"}]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such run directory"),
        (lambda p: p.mkdir(), "is not a run (no run.json)"),
        (lambda p: (p.mkdir(), (p / "history.csv").write_text("epoch\n1\n")), "has history.csv but no run.json"),
        (lambda p: (p.mkdir(), (p / "run.json").write_text("{\"status\": ")), "run.json cannot be read"),
        (lambda p: (p.mkdir(), (p / "run.json").write_text("{\"status\": \"completed\"}")), "older format"),
        (lambda p: (p.mkdir(), (p / "run.json").write_text("{\"format\": 99}")), "has format 99; this monitor reads format 1"),
    ],
)
def test_folders_that_are_not_runs_give_a_one_line_error_naming_the_path(tmp_path, setup, message):
    path = tmp_path / "x"
    setup(path)
    with pytest.raises(RunDirectoryError) as error:
        load_run(path)
    assert str(error.value).startswith(f"'{path}': ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_running_run_reports_as_running(tmp_path):
    from ignite.engine import Events

    from monitor import Objective, attach_monitoring
    from tests.conftest import tiny_setup

    s = tiny_setup()
    seen = []
    run = attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), to_save={"model": s["model"]})
    s["trainer"].add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda _: seen.append(load_run(tmp_path / "run")))
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=3)
    assert seen[0].status == "running" and len(seen[0].history) == 2


def test_run_json_is_on_disk_before_the_first_step_however_slow_the_writer(tmp_path, monkeypatch):
    # The history's rows are written at once; run.json's first write goes through the background
    # writer. A run read just after it started must not be "history.csv but no run.json".
    import time

    from ignite.engine import Events

    import monitor.compose.monitor
    from monitor import Objective, attach_monitoring
    from tests.conftest import tiny_setup

    slow = monitor.compose.monitor.write_record
    monkeypatch.setattr(monitor.compose.monitor, "write_record", lambda *a: (time.sleep(0.2), slow(*a)))
    s = tiny_setup()
    seen = []
    run = attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), to_save={"model": s["model"]})
    s["trainer"].add_event_handler(Events.ITERATION_STARTED(once=1),
                                   lambda _: seen.append(json.loads((tmp_path / "run" / "run.json").read_text())))
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=1)
    assert seen[0]["status"] == "running"


def test_compare_shows_each_runs_seed_and_ranks_equal_results_equally(tmp_path, runs):
    import shutil

    twin = tmp_path / "twin"  # the same result as "fast", under another seed
    shutil.copytree(runs[1], twin)
    record = json.loads((twin / "run.json").read_text())
    record["seed"], record["name"] = 7, "twin"
    (twin / "run.json").write_text(json.dumps(record))
    table = compare(load_run(p) for p in [*runs, twin]).set_index("name")
    assert table.loc["twin", "seed"] == 7
    assert json.loads((runs[1] / "run.json").read_text())["seed"] is None and pd.isna(table.loc["fast", "seed"])
    assert table.loc["twin", "rank"] == table.loc["fast", "rank"]  # a tie: one rank, as in sports
    tied = table["best_value"] == table.loc["fast", "best_value"]  # fast, twin, and failed (trained as fast did)
    assert tied.sum() == 3 and table.loc[tied, "rank"].nunique() == 1
    worse = table[table["best_value"] > table.loc["fast", "best_value"]]
    assert worse["rank"].min() == table.loc["fast", "rank"] + 3  # the next rank skips the tie ("1, 1, 1, 4")


def test_plot_draws_the_chosen_columns_on_a_log_scale_smoothed_and_only_for_runs_that_have_them(runs, tmp_path):
    loaded = [load_run(p) for p in runs]
    figure = plot_runs(loaded, tmp_path / "chosen.png", columns=["val_loss", "lr"], log=True, smooth=0.5,
                       x="iteration")
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["val_loss", "lr"]
    assert all(ax.get_yscale() == "log" and ax.get_xlabel() == "iteration" for ax in axes)
    drawn = axes[0].get_lines()[0]
    history = loaded[0].history
    assert list(drawn.get_xdata()) == history["iteration"].tolist()
    assert list(drawn.get_ydata()) == pytest.approx(history["val_loss"].ewm(alpha=0.5).mean().tolist())
    no_rate = [run for run in loaded if "lr" in run.history][0]
    no_rate.history = no_rate.history.drop(columns="lr")  # a run without the column: no line, no mark there
    lines = len(plot_runs(loaded, columns=["lr"]).axes[0].get_lines())
    assert lines == len(plot_runs([run for run in loaded if run is not no_rate], columns=["lr"]).axes[0].get_lines())
    with pytest.raises(ValueError, match=r"columns should name history columns of these runs .*got \['val_rmse'\]"):
        plot_runs(loaded, columns=["val_rmse"])
    with pytest.raises(ValueError, match=r"smooth should be a weight in \[0, 1\)"):
        plot_runs(loaded, smooth=1.0)
