"""``retrieval app``: start the Streamlit front end on a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from retrieval.cli.common import GALLERY_ROOT_HELP, app
from retrieval.errors import RetrievalError
from retrieval.safe_text import printable


@app.command("app")
def app_command(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory (else pick one of models/* in the app)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to serve the app on (default: Streamlit's setting, STREAMLIT_SERVER_PORT or server.port in a .streamlit/config.toml, else 8501)."),
    address: Optional[str] = typer.Option(None, "--address", help="Address to listen on, 0.0.0.0: reachable from other machines (default: Streamlit's setting, STREAMLIT_SERVER_ADDRESS or server.address, else localhost)."),
    gallery_root: Optional[list[Path]] = typer.Option(None, "--gallery-root", help=GALLERY_ROOT_HELP),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Where the training folder is now, for a run moved from another machine (the hardest-negative images; config.json names the old place)."),
) -> None:
    """Start the Streamlit front end on a run; its pages: Search, Verify (two images: same or different?), Hardest negatives, Embedding map, Training."""
    import os

    import retrieval
    from retrieval.run import given_root, read_config

    if port is not None and not 1 <= port <= 65535:
        raise RetrievalError(f"--port must be between 1 and 65535, got {port}")
    if run_dir is not None:
        read_config(run_dir)  # a clear one-line error for a missing folder / not a run directory
    # the roots reach the app through its environment (streamlit_app.py)
    if gallery_root:
        os.environ["RETRIEVAL_GALLERY_ROOTS"] = os.pathsep.join(str(given_root(r, "--gallery-root")) for r in gallery_root)
    if data_root is not None:
        os.environ["RETRIEVAL_DATA_ROOT"] = str(given_root(data_root, "--data-root"))
    script = Path(retrieval.__file__).resolve().parent.parent / "streamlit_app.py"
    if not script.is_file():
        raise RetrievalError(
            f"streamlit_app.py not found at {script}: the app runs from a source checkout "
            "installed with `pip install -e .` (as `make install` does)"
        )
    address_set = _streamlit_setting("address")
    if address is None and address_set is None:
        address = "localhost"  # Streamlit's own default listens on every interface
    port_set = _streamlit_setting("port")
    _check_can_listen((address, "--address") if address is not None else address_set,
                      (str(port), "--port") if port is not None else port_set)
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        *(["--server.port", str(port)] if port is not None else []), *(["--server.address", address] if address else []),
        "--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]
    if run_dir is not None:
        command += ["--", str(run_dir.resolve())]
    shown = "localhost" if address in (None, "0.0.0.0", "::") else address
    where = f"http://{shown}:{port}" if port is not None else "Streamlit prints its address below"
    typer.echo(printable(f"Retrieval app{f' for {run_dir}' if run_dir is not None else ''}: {where}  (Ctrl+C stops it)"))
    sys.stdout.flush()
    os.execvp(command[0], command)


def _streamlit_setting(option: str) -> tuple[str, str] | None:
    """The user's Streamlit setting ``server.<option>`` (address, port) and where it comes from:
    STREAMLIT_SERVER_<OPTION> (which ``streamlit run`` reads as its flag), else server.<option> in a
    config.toml it reads (~/.streamlit/, ./.streamlit/); None when unset (Streamlit's default applies)."""
    import os

    variable = f"STREAMLIT_SERVER_{option.upper()}"
    if os.environ.get(variable):
        return os.environ[variable], variable
    from streamlit import config

    config.get_config_options(force_reparse=True)
    if config.is_manually_set(f"server.{option}"):
        return str(config.get_option(f"server.{option}")), f"server.{option} in Streamlit's config.toml"
    return None


def _check_can_listen(address: tuple[str, str], port: tuple[str, str] | None) -> None:
    """A one-line RetrievalError, before Streamlit starts, when it could not listen where it is told to:
    an address that is none of this machine's (or no address at all), a port in use or not allowed.
    ``address`` and ``port`` are (value, where it was set: the flag or Streamlit's setting); ``port`` is
    None when unset. A socket is bound there as Streamlit binds its own (SO_REUSEADDR, IPv6 when the address has
    a colon), then closed. Without a port set, Streamlit takes 8501 or the next free one after it: only
    the address is tried (on any free port). A Unix socket address, or a value Streamlit will refuse
    itself, is left to Streamlit."""
    import errno
    import os
    import socket

    host, host_source = address
    if host.startswith("unix://"):
        return
    try:
        number, port_source = (int(port[0]), port[1]) if port is not None else (0, "")
    except ValueError:
        number, port_source = 0, ""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.socket(family)
    except OSError:  # no IPv6 on this machine: Streamlit says so itself
        return
    with listener:
        if os.name != "nt":  # as Streamlit: on Windows SO_REUSEADDR would let a port in use be bound again
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, number))
        except socket.gaierror as error:
            raise RetrievalError(f"{host_source} {host}: no such address ({error.strerror}); give an address of this "
                                 "machine, such as localhost, 127.0.0.1 or 0.0.0.0 (every interface)") from None
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise RetrievalError(f"{host_source} {host}: not an address of this machine; give one of its own, "
                                     "such as localhost, 127.0.0.1 or 0.0.0.0 (every interface)") from None
            if error.errno == errno.EADDRINUSE:
                raise RetrievalError(f"{port_source} {number}: the port is in use (another app or server listens on it "
                                     f"at {host or 'every interface'}); pick another with --port") from None
            if error.errno == errno.EACCES:
                raise RetrievalError(f"{port_source} {number}: not allowed to listen on this port (below 1024 "
                                     "only the administrator may); pick another with --port") from None
            raise RetrievalError(f"cannot listen at {host or 'every interface'}, port {number}: {error.strerror}") from None
