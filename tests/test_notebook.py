"""The example notebook runs headless, with a notebook progress bar and the run shown inline (issue #12)."""
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end, several seconds each: `make test-fast` leaves them out

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_example_notebook_trains_with_a_notebook_bar_and_shows_the_run_inline(tmp_path):
    folder = tmp_path / "examples"
    folder.mkdir()
    for name in ("notebook.ipynb", "binary_classification.py"):
        shutil.copy(EXAMPLES / name, folder / name)
    notebook = nbformat.read(folder / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    widgets = [out for out in outputs if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert widgets, "no notebook progress bar (an ipywidgets view) was displayed"
    text = "".join(out.get("text", "") for out in outputs)
    assert "val_loss" in text and "Early stopping (patience_exhausted)" in text  # the aligned lines, logged
    assert "\r" not in text  # no terminal bar in the cell's text
    shown = next(out["data"]["text/html"] for out in outputs if "Stopped because" in out.get("data", {}).get("text/html", ""))
    assert "no improvement of val_loss in 10 validations" in shown and "Configuration" in shown
    assert "monitorCharts(" in shown and "uPlot" in shown  # the same interactive charts as the HTML page
    assert (tmp_path / "reports" / "notebook" / "run.json").exists()
