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
    """Start the Streamlit front end (search, hardest negatives, embedding map, training curves)."""
    import os

    import retrieval
    from retrieval.run import read_config

    if port is not None and not 1 <= port <= 65535:
        raise RetrievalError(f"--port must be between 1 and 65535, got {port}")
    if run_dir is not None:
        read_config(run_dir)  # a clear one-line error for a missing folder / not a run directory
    from retrieval.run import check_root  # the roots reach the app through its environment (streamlit_app.py)

    if gallery_root:
        os.environ["RETRIEVAL_GALLERY_ROOTS"] = os.pathsep.join(str(check_root(r.absolute(), source="--gallery-root")) for r in gallery_root)
    if data_root is not None:
        os.environ["RETRIEVAL_DATA_ROOT"] = str(check_root(data_root.absolute(), source="--data-root"))
    script = Path(retrieval.__file__).resolve().parent.parent / "streamlit_app.py"
    if not script.is_file():
        raise RetrievalError(
            f"streamlit_app.py not found at {script}: the app runs from a source checkout "
            "installed with `pip install -e .` (as `make install` does)"
        )
    if address is None and not _streamlit_sets_address():
        address = "localhost"  # Streamlit's own default listens on every interface
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


def _streamlit_sets_address() -> bool:
    """Whether the user's Streamlit settings name the address to listen on: STREAMLIT_SERVER_ADDRESS (which
    ``streamlit run`` reads as its flag) or server.address in a config.toml it reads (~/.streamlit/, ./.streamlit/)."""
    import os

    if os.environ.get("STREAMLIT_SERVER_ADDRESS"):
        return True
    from streamlit import config

    config.get_config_options(force_reparse=True)
    return config.is_manually_set("server.address")
