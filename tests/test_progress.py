"""retrieval.progress.stage_bars: a bar a stage from its first report, on a terminal only unless asked."""

from retrieval.progress import stage_bars

STAGES = {"detect": "finding faces", "embed": "embedding images"}


def report(bars) -> None:
    bars("detect", 2, 2)
    bars("embed", 1, 3)
    bars("embed", 3, 3)


def test_a_pipe_gets_no_bars_and_a_terminal_one_a_stage(capsys, monkeypatch):
    with stage_bars(STAGES) as bars:
        report(bars)
    assert capsys.readouterr().err == "", "stderr is no terminal here: nothing"
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: the console is a terminal
    with stage_bars(STAGES) as bars:
        report(bars)
    shown = capsys.readouterr().err
    assert "finding faces" in shown and "2/2" in shown and "embedding images" in shown and "3/3" in shown, shown
    with stage_bars(STAGES, enabled=False) as bars:
        report(bars)
    assert capsys.readouterr().err == "", "--quiet"


def test_outside_a_terminal_when_asked_and_nothing_for_work_that_never_reports(capsys):
    with stage_bars(STAGES, stderr=False, terminal_only=False) as bars:
        bars("detect", 5, 5)
    out = capsys.readouterr().out
    assert "finding faces" in out and "5/5" in out and "embedding images" not in out
    with stage_bars(STAGES, stderr=False, terminal_only=False):
        pass
    assert capsys.readouterr().out == "", "no report: no bar, not even an empty line"
