"""MambaVisionModel.ipynb runs top to bottom (nbclient) on a tiny synthetic corpus, and ships without outputs."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "MambaVisionModel.ipynb"


def test_notebook_is_committed_without_outputs_and_matches_its_generator():
    import nbformat

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebook", REPO / "scripts" / "make_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert [c.source for c in mod.build().cells] == [c.source for c in nb.cells], \
        "MambaVisionModel.ipynb is stale: run `python scripts/make_notebook.py`"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, synth_corpus):
    import nbformat
    from nbclient import NotebookClient

    # DEAM_ROOT unset: the notebook takes WORK/corpus, generating it when absent; the session's
    # synthetic corpus stands in for it here (generation itself is tested in test_synth.py)
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "corpus").symlink_to(synth_corpus, target_is_directory=True)
    env = {
        "DEAM_NB_WORKDIR": str(tmp_path / "nb"),
        "DEAM_NB_CONFIG": str(REPO / "configs" / "test_tiny.yaml"),
        "DEAM_NB_MODEL": "mambavision_tiny",
        "DEAM_NB_EPOCHS": "1",
        "DEAM_NB_OVERRIDES": "data.split=official2015 data.prepare_workers=2",
    }
    monkeypatch.delenv("DEAM_ROOT", raising=False)  # the notebook must synthesize its corpus
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "M parameters" in outputs and "scale 1-9" in outputs and "ridge" in outputs
    assert (tmp_path / "nb" / "run_mambavision_tiny" / "eval" / "report.md").is_file()
    images = sum(1 for c in nb.cells for o in getattr(c, "outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 6  # log-mel, learning curves, scatter, VA plane, dynamic curves, prediction curve
