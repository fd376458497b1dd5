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


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, list]:
    """``retrieval app ARGS`` through the console script's entry (``retrieval.cli.main``): its exit
    status, its stderr and the commands it would have started."""
    import sys

    import pytest

    from retrieval.cli import main

    calls = []
    monkeypatch.setattr("os.execvp", lambda file, argv: calls.append(argv))
    for name in ("RETRIEVAL_RUN_DIR", "RETRIEVAL_GALLERY_ROOTS", "RETRIEVAL_DATA_ROOT"):  # the command sets them for the app
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", ["retrieval", "app", *map(str, args)])
    from streamlit import config

    config.get_config_options(force_reparse=True)  # Streamlit warns when its settings changed since the last test read them
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main()
    return exit.value.code or 0, capsys.readouterr().err, calls


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _listening_socket():
    """A socket listening on a free port of 127.0.0.1 (the port in use that the tests ask for)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_app_command_refuses_an_address_that_is_not_this_machines_in_one_line(monkeypatch, capsys, full_run):
    """Streamlit itself ends in a traceback (socket.gaierror, OSError: Cannot assign requested address)."""
    for address in ("999.1.1.1", "192.0.2.1", "::5"):  # no address at all; TEST-NET-1 and an IPv6 address of no machine here
        code, stderr, calls = run_main(monkeypatch, capsys, full_run, "--address", address)
        assert (code, calls) == (2, []), stderr
        assert f"--address {address}" in _one_error_line(stderr)


def test_app_command_refuses_a_port_in_use_in_one_line(monkeypatch, capsys, full_run):
    """Streamlit says "Port N is not available" and exits with status 1; a port set in Streamlit's own settings
    is tried too, and the error names where it was set."""
    with _listening_socket() as listener:
        port = listener.getsockname()[1]
        for address in ("127.0.0.1", "0.0.0.0"):
            code, stderr, calls = run_main(monkeypatch, capsys, full_run, "--port", port, "--address", address)
            assert (code, calls) == (2, []), stderr
            assert f"--port {port}" in _one_error_line(stderr) and "in use" in stderr
        monkeypatch.setenv("STREAMLIT_SERVER_PORT", str(port))
        code, stderr, calls = run_main(monkeypatch, capsys, full_run)
        assert (code, calls) == (2, []), stderr
        assert f"STREAMLIT_SERVER_PORT {port}" in _one_error_line(stderr)
    code, stderr, calls = run_main(monkeypatch, capsys, full_run)  # free again: the app starts, on Streamlit's setting
    assert code == 0 and len(calls) == 1 and "--server.port" not in calls[0], stderr


def test_app_command_without_a_port_setting_leaves_a_busy_8501_to_streamlit(monkeypatch, capsys, full_run, tmp_path):
    """Without any port setting Streamlit moves on to the next free port after 8501: no error for 8501 in use."""
    import socket

    import pytest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("STREAMLIT_SERVER_PORT", raising=False)
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", 8501))
            listener.listen()
        except OSError:
            pytest.skip("port 8501 is in use on this machine already")
        code, stderr, calls = run_main(monkeypatch, capsys, full_run)
    assert code == 0 and len(calls) == 1, stderr
    assert "--server.port" not in calls[0] and calls[0][calls[0].index("--server.address") + 1] == "localhost"


def test_app_command_refuses_a_root_that_does_not_exist_before_the_server_starts(monkeypatch, capsys, full_run, gallery, tmp_path):
    missing = tmp_path / "nowhere"
    for flag in ("--gallery-root", "--data-root"):
        code, stderr, calls = run_main(monkeypatch, capsys, full_run, flag, missing)
        assert (code, calls) == (2, []), stderr
        assert f"{flag} {missing}: no such folder" in _one_error_line(stderr)
    code, stderr, calls = run_main(monkeypatch, capsys, full_run, "--gallery-root", gallery, "--data-root", gallery)
    assert code == 0 and len(calls) == 1, stderr


def test_app_help_names_every_page_of_the_app():
    from retrieval import cli

    from app_helpers import PAGE_FILES

    result = CliRunner().invoke(cli.app, ["app", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    help_text = " ".join(result.output.split())
    assert [page for page in PAGE_FILES if page not in help_text] == []
