"""The Hardest negatives page (app_pages/hardest_negatives.py): the mining log, its filters and paging."""

import json

import fake_runs
from app_helpers import bare_run, charts, full_run, gallery, go, start, texts  # noqa: F401


def test_hardest_negatives_page_shows_triples_filters_and_recurring_pairs(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    assert any("3** logged triplets in epoch 3" in m for m in texts(at.markdown))
    triples = [m for m in texts(at.markdown) if "d_ap = " in m and "violation" in m]
    assert len(triples) == 3
    gaps = [float(m.split("d_an − d_ap = ")[1].split()[0]) for m in triples]
    assert gaps == sorted(gaps)
    assert "violation **+0.1400**" in triples[0]  # margin 0.2 - gap 0.06
    recurring = [m for m in texts(at.markdown) if "pair was hard in epochs 1, 2, 3" in m]
    assert len(recurring) == 2
    hardness = [c for c in charts(at) if "hconcat" in c]
    assert len(hardness) == 1

    at.selectbox(key="mining_class").set_value("cherry").run()
    assert len([m for m in texts(at.markdown) if "d_ap = " in m]) == 1
    at.selectbox(key="mining_class").set_value("(all classes)").run()
    at.checkbox(key="mining_recurring").check().run()
    assert len([m for m in texts(at.markdown) if "d_ap = " in m]) == 2
    at.select_slider(key="mining_epoch").set_value(1).run()
    assert any("in epoch 1" in m for m in texts(at.markdown))
    assert len(at.dataframe) == 1  # the confused class pairs


def test_large_mining_logs_are_paged(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "long", gallery, index=False, epochs=1)
    rows = [dict(fake_runs.mining_rows(1)[0], d_an=0.5 + i / 100, d_an_minus_d_ap=i / 100) for i in range(20)]
    (run / "mining" / "epoch_001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    at = go(start(monkeypatch, run), "Hardest negatives")
    shown = lambda: [m for m in texts(at.markdown) if "d_ap = " in m]  # noqa: E731
    assert len(shown()) == 8 and shown()[0].startswith("**#1**")
    at.number_input(key="mining_page").set_value(3).run()
    assert len(shown()) == 4 and shown()[0].startswith("**#17**")


def test_run_without_mining_log_says_so(monkeypatch, bare_run):
    at = go(start(monkeypatch, bare_run), "Hardest negatives")
    assert any("no mining log" in m for m in texts(at.info))
    assert not at.error
