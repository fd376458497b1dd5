"""The app under load: concurrent sessions against one ``retrieval app`` server (``benchmarks/app.py --sessions N``).

The server is the real command, ``retrieval app RUN_DIR``, on the benchmark's run (random-init
resnet18, 128 px, a gallery of sample-data photos: :func:`app.build`), its port and address given
through ``STREAMLIT_SERVER_PORT`` / ``STREAMLIT_SERVER_ADDRESS``. Each session opens the app,
then ``--uploads`` times: uploads a query (a distinct 1024x768 JPEG, so no upload hits the cache),
waits for the Search page's answer, switches to another page (Verify, Hardest negatives,
Embedding map, Training in turn) and back to Search. Sessions are of two kinds:

- ``--browsers`` of them (default: all) are Playwright contexts in the real Chromium
  (/usr/bin/chromium, the browser test's launch flags), clicking the page as a user does;
- the others are Streamlit websocket clients: the protocol the browser speaks (``BackMsg`` /
  ``ForwardMsg`` protobufs over ``/_stcore/stream``, the upload as an HTTP PUT with the XSRF
  token), without rendering. On one machine the browsers' rendering competes with the server
  for its cores, which real users' browsers do not: the websocket clients measure the server
  nearer to how it is used (section "app-load-websockets" of BENCHMARKS.md, ``--browsers 4``).

Reported: errors (exceptions or error alerts on a page, timeouts, failed requests; goal 0), the
server time of each upload as the Search page measures it (its "Server time N ms" caption: the
page's script from start to end), the session's wall time per upload (upload to answer, as the
user waits), and the server's peak memory (VmHWM of the server process; its RSS sampled every
0.2 s, after the warm-up visit that loads the model and index).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OTHER_PAGES = ("Verify", "Hardest negatives", "Embedding map", "Training")
SERVER_TIME = re.compile(r"Server time (\d+) ms")
STEP_TIMEOUT_S = 180.0


@dataclass
class SessionResult:
    kind: str
    server_ms: list[float] = field(default_factory=list)
    wait_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pages: int = 0


# ----------------------------------------------------------------------------- the server


class Server:
    """``retrieval app RUN_DIR`` on a free port, its memory sampled until stopped."""

    def __init__(self, run_dir: Path, log: Path) -> None:
        self.port = _free_port()
        env = dict(os.environ, STREAMLIT_SERVER_PORT=str(self.port), STREAMLIT_SERVER_ADDRESS="127.0.0.1", HF_HUB_OFFLINE="1")
        retrieval = Path(sys.executable).parent / "retrieval"
        self.log = open(log, "w")
        self.process = subprocess.Popen([str(retrieval), "app", str(run_dir)], stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env, cwd=tempfile.gettempdir())
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://{self.url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        self._sampler.start()
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"the app did not answer within {timeout_s:.0f} s")

    def status_kib(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.samples.append(self.status_kib("VmRSS"))
            except OSError:
                return

    def stop(self) -> int:
        """Stop the server (its own process id); its peak RSS (VmHWM) in KiB."""
        self._stop.set()
        peak = self.status_kib("VmHWM")
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self.log.close()
        return peak


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ----------------------------------------------------------------------------- a websocket session


class SocketSession:
    """One Streamlit session over its websocket, as the browser's frontend speaks it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = None
        self.xsrf = ""
        self.ws = None
        self.session_id = ""
        self.uploader_id = ""
        self.pages: dict[str, str] = {}

    async def open(self, result: SessionResult) -> None:
        import requests
        import websockets

        self.http = requests.Session()
        await asyncio.to_thread(self.http.get, f"http://{self.url}/_stcore/health", timeout=30)
        self.xsrf = self.http.cookies.get("_streamlit_xsrf") or ""
        self.ws = await websockets.connect(f"ws://{self.url}/_stcore/stream", subprotocols=["streamlit", self.xsrf],
                                           origin=f"http://{self.url}", max_size=None,
                                           additional_headers={"Cookie": f"_streamlit_xsrf={self.xsrf}"})
        await self.rerun(result)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def rerun(self, result: SessionResult, page: str = "", upload=None) -> str:
        """Run the script (on ``page``, with ``upload``'s widget state) to its end; the Server time caption, if any."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        message.rerun_script.query_string = ""
        message.rerun_script.page_script_hash = self.pages.get(page, "")
        if upload is not None:
            widget = message.rerun_script.widget_states.widgets.add()
            widget.id = self.uploader_id
            widget.file_uploader_state_value.uploaded_file_info.append(upload)
        await self.ws.send(message.SerializeToString())
        return await asyncio.wait_for(self._until_finished(result), STEP_TIMEOUT_S)

    async def upload(self, name: str, data: bytes, result: SessionResult) -> str:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.Common_pb2 import UploadedFileInfo

        request = BackMsg()
        request.file_urls_request.request_id = name
        request.file_urls_request.file_names.append(name)
        request.file_urls_request.session_id = self.session_id
        await self.ws.send(request.SerializeToString())
        urls = await asyncio.wait_for(self._until_finished(result, want="file_urls_response"), STEP_TIMEOUT_S)
        response = await asyncio.to_thread(
            self.http.put, f"http://{self.url}{urls.upload_url}", files={"file": (name, data, "image/jpeg")},
            headers={"X-Xsrftoken": self.xsrf, "Origin": f"http://{self.url}"}, timeout=STEP_TIMEOUT_S)
        if response.status_code >= 300:
            result.errors.append(f"upload PUT {response.status_code}")
            return ""
        info = UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)
        return await self.rerun(result, "Search", upload=info)

    async def _until_finished(self, result: SessionResult, want: str = "script_finished"):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        caption = ""
        while True:
            message = ForwardMsg()
            message.ParseFromString(await self.ws.recv())
            kind = message.WhichOneof("type")
            if kind == "new_session":
                self.session_id = message.new_session.initialize.session_id
            elif kind == "navigation":
                self.pages = {page.page_name: page.page_script_hash for page in message.navigation.app_pages}
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                caption = self._read_element(message.delta.new_element, result) or caption
            elif kind == "file_urls_response" and want == kind:
                return message.file_urls_response.file_urls[0]
            elif kind == "script_finished" and want == kind:
                return caption

    def _read_element(self, element, result: SessionResult) -> str:
        kind = element.WhichOneof("type")
        if kind == "file_uploader":
            self.uploader_id = element.file_uploader.id
        elif kind == "exception":
            result.errors.append(f"exception: {element.exception.message[:120]}")
        elif kind == "alert" and element.alert.format == element.alert.ERROR:
            result.errors.append(f"error: {element.alert.body[:120]}")
        elif kind == "markdown" and SERVER_TIME.search(element.markdown.body):
            return element.markdown.body
        return ""


async def socket_session(url: str, queries: list[tuple[str, bytes]], result: SessionResult) -> None:
    session = SocketSession(url)
    try:
        await session.open(result)
        for i, (name, data) in enumerate(queries):
            started = time.perf_counter()
            caption = await session.upload(name, data, result)
            result.wait_s.append(time.perf_counter() - started)
            _record_server_time(caption, result)
            await session.rerun(result, OTHER_PAGES[i % len(OTHER_PAGES)])
            await session.rerun(result, "Search")
            result.pages += 2
    except Exception as error:  # noqa: BLE001  a failed session is counted, the others go on
        result.errors.append(f"{type(error).__name__}: {str(error)[:120]}")
    finally:
        await session.close()


# ----------------------------------------------------------------------------- a browser session


async def browser_session(browser, url: str, queries: list[tuple[str, Path]], result: SessionResult) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_S * 1000)
    try:
        await page.goto(f"http://{url}/")
        for i, (name, path) in enumerate(queries):
            file_input = page.locator("input[type=file]")
            await file_input.wait_for(state="attached")
            started = time.perf_counter()
            await file_input.set_input_files(str(path))
            await page.get_by_text(name, exact=True).first.wait_for()  # the preview's caption: this upload's run
            await page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden")  # the run has ended
            caption = await page.get_by_text(SERVER_TIME).first.inner_text()
            result.wait_s.append(time.perf_counter() - started)
            _record_server_time(caption, result)
            await _check_page(page, result)
            for target in (OTHER_PAGES[i % len(OTHER_PAGES)], "Search"):
                await page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=target, exact=True).click()
                await page.get_by_role("heading", name=re.compile("^" + re.escape(target))).first.wait_for()  # its st.header
                await page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden")
                await _check_page(page, result)
                result.pages += 1
    except Exception as error:  # noqa: BLE001
        result.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:60]} {str(error).splitlines()[-1][:100]}")
    finally:
        await context.close()


async def _check_page(page, result: SessionResult) -> None:
    for test_id, what in (("stException", "exception"), ("stAlertContentError", "error")):
        count = await page.locator(f"[data-testid='{test_id}']").count()
        if count:
            result.errors.append(f"{what} on the page ({count})")


def _record_server_time(caption: str, result: SessionResult) -> None:
    found = SERVER_TIME.search(caption or "")
    if found:
        result.server_ms.append(float(found.group(1)))
    else:
        result.errors.append("no answer (no Server time caption)")


# ----------------------------------------------------------------------------- the run


def query_uploads(data_dir: Path, n: int) -> list[tuple[str, bytes]]:
    """``n`` distinct 1024x768 JPEGs made from the held-out photos (each its own bytes: no cache hit)."""
    from PIL import Image

    photos = sorted((data_dir / "test").rglob("*.png"))
    out = []
    for i in range(n):
        image = Image.open(photos[i % len(photos)]).convert("RGB").resize((1024, 768), Image.BILINEAR)
        image.putpixel((i % 1024, (i // 1024) % 768), (i % 256, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append((f"query_{i:03d}.jpg", buffer.getvalue()))
    return out


async def run_sessions(url: str, n_sessions: int, n_browsers: int, per_session: list[list[tuple[str, bytes]]],
                       folder: Path) -> tuple[list[SessionResult], float]:
    from playwright.async_api import async_playwright

    results = [SessionResult("browser" if s < n_browsers else "websocket") for s in range(n_sessions)]
    started = time.perf_counter()
    async with async_playwright() as playwright:
        browser = None
        if n_browsers:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tasks = []
        for s in range(n_sessions):
            if s < n_browsers:
                files = []
                for name, data in per_session[s]:
                    (folder / name).write_bytes(data)
                    files.append((name, folder / name))
                tasks.append(browser_session(browser, url, files, results[s]))
            else:
                tasks.append(socket_session(url, per_session[s], results[s]))
        await asyncio.gather(*tasks)
        if browser is not None:
            await browser.close()
    return results, time.perf_counter() - started


def section_name(args) -> str:
    """BENCHMARKS.md's section: "app-load" with every session in Chromium, else "app-load-websockets"."""
    return "app-load" if n_browsers_of(args) == args.sessions else "app-load-websockets"


def n_browsers_of(args) -> int:
    return args.sessions if args.browsers is None else min(args.browsers, args.sessions)


def run_load(args, build) -> str:
    """Build (or reuse) the run, serve it, run the sessions; the BENCHMARKS.md section's body."""
    from _report import command_line, machine_description

    cache = REPO / ".benchmarks" / "app"
    run_dir, data_dir = build(cache, args.gallery_classes, args.images_per_class, args.rebuild)
    n_browsers = n_browsers_of(args)
    uploads = query_uploads(data_dir, args.sessions * args.uploads + 1)
    per_session = [uploads[1 + s * args.uploads: 1 + (s + 1) * args.uploads] for s in range(args.sessions)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(run_dir, Path(tmp) / "server.log")
        try:
            server.wait_healthy()
            warm = SessionResult("warm-up")
            started = time.perf_counter()
            asyncio.run(socket_session(server.url, uploads[:1], warm))  # loads the model and the index once
            warm_s = time.perf_counter() - started
            rss_after_warm_up = server.status_kib("VmRSS")
            results, wall_s = asyncio.run(run_sessions(server.url, args.sessions, n_browsers, per_session, Path(tmp)))
        finally:
            peak_kib = server.stop()
            log_tail = (Path(tmp) / "server.log").read_text()[-2000:]
    load_after = os.getloadavg()
    return report(args, results, warm, warm_s, wall_s, rss_after_warm_up, peak_kib, max(server.samples or [0]),
                  n_browsers, load_before, load_after, log_tail, machine_description(), command_line())


def report(args, results, warm, warm_s, wall_s, rss_after_warm_up, peak_kib, sampled_peak_kib, n_browsers,
           load_before, load_after, log_tail, machine: str, command: str) -> str:
    server_ms = [v for r in results for v in r.server_ms]
    alone_ms = warm.server_ms[0] if warm.server_ms else float("nan")
    wait_s = [v for r in results for v in r.wait_s]
    errors = [e for r in results for e in r.errors]
    by_kind = {kind: [r for r in results if r.kind == kind] for kind in ("browser", "websocket")}

    def q(values, p):
        return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else (values[0] if values else float("nan"))

    lines = [
        f"{args.sessions} concurrent sessions against one `retrieval app` server (port and address from "
        f"STREAMLIT_SERVER_PORT / STREAMLIT_SERVER_ADDRESS): {n_browsers} Playwright contexts in Chromium"
        + (f" and {args.sessions - n_browsers} Streamlit websocket clients (the browser's protocol without rendering, "
           "so that the clients take less of the 2 cores the server runs on)" if n_browsers < args.sessions else
           ", all on the server's machine (their rendering takes much of its 2 cores)")
        + f". Each session uploads {args.uploads} distinct 1024x768 JPEG queries and after each switches to another "
        f"page and back to Search. Run: random-init resnet18 at 128 px, gallery of "
        f"{args.gallery_classes * args.images_per_class} sample-data photos (as the app section above).",
        "",
        "| | value |",
        "|---|---|",
        f"| uploads answered | {len(server_ms)} of {args.sessions * args.uploads} |",
        f"| page switches | {sum(r.pages for r in results)} |",
        f"| **errors** (goal 0) | **{len(errors)}**{': ' + '; '.join(sorted(set(errors))[:5]) if errors else ''} |",
        f"| server time per upload (the Search page's script), p50 / p95 | {q(server_ms, 50):.0f} / {q(server_ms, 95):.0f} ms |",
        f"| reference: one session alone (the warm-up visit's upload, same server) | {alone_ms:.0f} ms: p50 under load = "
        f"{q(server_ms, 50) / alone_ms:.1f}x, p95 = {q(server_ms, 95) / alone_ms:.1f}x |",
        f"| session's wait per upload (upload to answer), p50 / p95 | {q(wait_s, 50):.1f} / {q(wait_s, 95):.1f} s |",
    ]
    for kind, group in by_kind.items():
        waits = [v for r in group for v in r.wait_s]
        if waits:
            lines.append(f"| … {kind} sessions ({len(group)}): wait p50 / p95 | {q(waits, 50):.1f} / {q(waits, 95):.1f} s |")
    lines += [
        f"| server peak memory (VmHWM) | {peak_kib / 1024:.0f} MiB (after the warm-up visit: {rss_after_warm_up / 1024:.0f} MiB; "
        f"sampled peak {sampled_peak_kib / 1024:.0f} MiB) |",
        f"| warm-up visit (loads model and index), all sessions' wall time | {warm_s:.1f} s, {wall_s:.0f} s |",
        "",
        "Server time is what the page measures from its start to its end (decode + embed of the upload, search, "
        "neighbours, margin picture); the wait adds Streamlit's queueing, the upload request and the transfer, "
        "with every session's script, the clients and the browsers sharing the 2 cores.",
        f"Machine: {machine}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (shared with "
        "other engineers' work at the time: the times are pessimistic; the memory is the server's own).",
        f"Command: `{command}`",
    ]
    if warm.errors:
        lines.append(f"Warm-up errors: {'; '.join(warm.errors)}. Server log tail: {log_tail[-300:]!r}")
    return "\n".join(lines)
