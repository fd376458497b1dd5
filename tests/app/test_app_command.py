"""`retrieval app RUN_DIR`: starts streamlit on streamlit_app.py (found beside the package) and the run."""

from pathlib import Path

from typer.testing import CliRunner

from app_helpers import APP, full_run, gallery  # noqa: F401
from retrieval.errors import RetrievalError


def run_cli(monkeypatch, *args):
    from retrieval import cli

    calls = []
    monkeypatch.setattr("os.execvp", lambda file, argv: calls.append(argv))
    result = CliRunner().invoke(cli.app, ["app", *map(str, args)])
    return result, calls


def test_app_command_starts_streamlit_on_the_run_and_prints_the_url(monkeypatch, full_run):
    result, calls = run_cli(monkeypatch, full_run, "--port", "8765")
    assert result.exit_code == 0, result.output
    assert "http://localhost:8765" in result.output
    (argv,) = calls
    assert argv[1:4] == ["-m", "streamlit", "run"] and Path(argv[4]) == APP
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert argv[-2:] == ["--", str(full_run.resolve())]


def test_app_command_rejects_a_folder_that_is_not_a_run(monkeypatch, tmp_path):
    result, calls = run_cli(monkeypatch, tmp_path / "nowhere")
    assert calls == []
    assert isinstance(result.exception, RetrievalError) and "run directory not found" in str(result.exception)
