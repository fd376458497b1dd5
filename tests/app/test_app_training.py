"""The Training page (app_pages/training.py): curves per epoch and held-out distances."""

import fake_runs
from app_helpers import charts, full_run, gallery, go, start, texts  # noqa: F401


def test_training_page_shows_curves_and_held_out_distances(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Training")
    specs = charts(at)
    assert len(specs) == 2
    curves = next(s for s in specs if "facet" in s)
    assert {r["metric"] for r in curves["datasets"][curves["data"]["name"]]} >= {"training loss", "Recall@1 (held-out classes)"}
    assert any("negative pairs of held-out classes" in c for c in texts(at.caption))


def test_run_without_metrics_or_val_distances_says_so(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "untrained", gallery, index=False, mining=False, metrics=False, val_distances=False)
    at = go(start(monkeypatch, run), "Training")
    infos = texts(at.info)
    assert any("no metrics.jsonl" in m for m in infos) and any("no val_distances.json" in m for m in infos)
