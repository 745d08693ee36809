"""The notebooks run top to bottom (their code cells, in order, in one namespace)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_FAST", "1")
    nb = json.loads(path.read_text())
    ns: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        try:
            exec(compile(src, f"{path.name}[cell {i}]", "exec"), ns)
        except Exception as exc:  # name the failing cell
            raise AssertionError(f"{path.name} cell {i} failed: {exc!r}") from exc
    # what the notebook promises to show
    assert len(ns["alerts"]) > 0 and ns["alerts"]["scenario"].notna().any()
    assert ns["comparison"].loc["alerts", "tuned"] <= ns["comparison"].loc["alerts", "default"]
    assert ns["X"]["score"].between(0, 100).all()
