"""`retrieval app RUN_DIR`: starts streamlit on streamlit_app.py (found beside the package) and the run."""

from pathlib import Path

from typer.testing import CliRunner

from app_helpers import APP, full_run, gallery  # noqa: F401
from retrieval.errors import RetrievalError


def run_cli(monkeypatch, *args):
    from retrieval import cli

    calls = []
    monkeypatch.setattr("os.execvp", lambda file, argv: calls.append(argv))
    for name in ("RETRIEVAL_RUN_DIR", "RETRIEVAL_GALLERY_ROOTS", "RETRIEVAL_DATA_ROOT"):  # the command sets them for the app
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
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


def test_app_command_leaves_port_and_address_to_streamlits_settings_unless_given(monkeypatch, full_run):
    """STREAMLIT_SERVER_PORT / STREAMLIT_SERVER_ADDRESS and .streamlit/config.toml apply: no flag overrides them."""
    monkeypatch.setenv("STREAMLIT_SERVER_PORT", "9123")
    monkeypatch.setenv("STREAMLIT_SERVER_ADDRESS", "127.0.0.1")
    result, calls = run_cli(monkeypatch, full_run)
    assert result.exit_code == 0, result.output
    (argv,) = calls
    assert "--server.port" not in argv and "--server.address" not in argv
    assert "8501" not in result.output
    result, calls = run_cli(monkeypatch, full_run, "--port", "8765", "--address", "0.0.0.0")
    (argv,) = calls
    assert argv[argv.index("--server.port") + 1] == "8765" and argv[argv.index("--server.address") + 1] == "0.0.0.0"


def test_app_command_rejects_a_port_out_of_range_in_one_line(monkeypatch, full_run):
    result, calls = run_cli(monkeypatch, full_run, "--port", "70000")
    assert calls == [] and isinstance(result.exception, RetrievalError) and "--port" in str(result.exception)


def test_app_command_listens_on_localhost_unless_streamlits_settings_or_address_say_otherwise(monkeypatch, full_run, tmp_path):
    """Streamlit alone listens on every interface: without any setting the app stays on localhost."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    (argv,) = run_cli(monkeypatch, full_run)[1]
    assert argv[argv.index("--server.address") + 1] == "localhost"
    monkeypatch.setenv("STREAMLIT_SERVER_ADDRESS", "127.0.0.2")
    (argv,) = run_cli(monkeypatch, full_run)[1]
    assert "--server.address" not in argv
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS")
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text('[server]\naddress = "0.0.0.0"\nport = 9000\n')
    (argv,) = run_cli(monkeypatch, full_run)[1]
    assert "--server.address" not in argv and "--server.port" not in argv
