"""compare: two tiny models + ridge on the same split and features -> one table."""
from __future__ import annotations

import json

import pytest
from _inference_helpers import TINY_CONFIG, shared_cache, tiny_overrides

from deam_mamba import cli
from deam_mamba.core.errors import ConfigError
from deam_mamba.experiments.compare import run_comparison


@pytest.mark.slow
def test_compare_two_tiny_models_and_ridge(tmp_path_factory, synth_corpus, tmp_path, capsys):
    ovr = tiny_overrides(synth_corpus, shared_cache(tmp_path_factory))
    ovr = [o for o in ovr if not o.startswith("model.name=")]
    out = tmp_path / "cmp"
    rc = cli.main(["compare", "--config", str(TINY_CONFIG), *ovr, "--models", "mambavision_tiny,resnet18",
                   "--out", str(out), "--bootstrap", "50"])
    assert rc == 0
    doc = json.loads((out / "comparison.json").read_text())
    rows = {r["model"]: r for r in doc["rows"]}
    assert list(rows) == ["mambavision_tiny", "resnet18", "ridge"]
    assert doc["scale"] == "1-9"
    n_test = {r["n_test_songs"] for r in rows.values()}
    assert len(n_test) == 1 and n_test.pop() >= 2  # the same test songs for every model
    for name in ("mambavision_tiny", "resnet18"):
        r = rows[name]
        assert r["params"] > 0 and r["train_time_s"] > 0
        assert (out / "runs" / name / "eval" / "metrics.json").is_file()
    assert rows["resnet18"]["params"] > 10 * rows["mambavision_tiny"]["params"]
    assert rows["ridge"]["params"] is None and rows["ridge"]["valence_ccc"] is not None
    md = (out / "comparison.md").read_text()
    assert "ridge" in md and "mambavision_tiny" in md and "1-9" in md
    assert "ridge" in capsys.readouterr().out
    # the same folder is not overwritten without --force
    assert cli.main(["compare", "--config", str(TINY_CONFIG), *ovr, "--models", "mambavision_tiny",
                     "--out", str(out)]) == 2


def test_compare_rejects_unknown_models_before_training(tmp_path):
    with pytest.raises(ConfigError, match="no_such_model"):
        run_comparison(TINY_CONFIG, ["data.root=/nonexistent"], models=["no_such_model"], out_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_evaluate_with_ridge_writes_both_rows_on_the_same_songs(tmp_path_factory, synth_corpus, tmp_path, capsys):
    from _inference_helpers import tiny_run

    run = tiny_run(tmp_path_factory, synth_corpus)
    out = tmp_path / "ev"
    assert cli.main(["evaluate", str(run), "--split", "test", "--out", str(out), "--bootstrap", "50", "--ridge"]) == 0
    doc = json.loads((out / "comparison.json").read_text())
    rows = {r["model"]: r for r in doc["rows"]}
    assert list(rows) == ["mambavision_tiny", "ridge"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert rows["mambavision_tiny"]["n_test_songs"] == rows["ridge"]["n_test_songs"] == metrics["static"]["n"]
    assert rows["mambavision_tiny"]["valence_ccc"] == pytest.approx(metrics["static"]["valence"]["ccc"]["value"])
    assert "ridge" in capsys.readouterr().out
    # ridge is fitted on train+val: it refuses other splits
    assert cli.main(["evaluate", str(run), "--split", "val", "--out", str(tmp_path / "v"), "--bootstrap", "0",
                     "--ridge"]) == 2
