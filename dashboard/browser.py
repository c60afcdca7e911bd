"""The dashboard as a user sees it: `mixprec dashboard` served on a free loopback port and
pages opened in headless Chromium. Used by the browser tests and the dashboard benchmark."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mixprec.processes import terminate

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out of a closed network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # fmt: skip
HEALTH_WAIT_S = 60.0
# What shows that each page has drawn: its chart, or its header where it has none.
CHART = {"Sensitivity": ".js-plotly-plot .heatmaplayer", "Budget": ".js-plotly-plot .barlayer",
         "Pareto": ".js-plotly-plot .scatterlayer"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def dashboard_command(store: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "mixprec", "dashboard", "--runs", str(store), "--port",
            str(port)]  # fmt: skip


def wait_for_health(server: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Until Streamlit's health check on `port` answers (bounded); the log if the server died."""
    deadline = time.monotonic() + HEALTH_WAIT_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the dashboard exited: {log_path.read_text()}")
        try:
            url = f"http://127.0.0.1:{port}/_stcore/health"
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.read() == b"ok":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard did not answer within {HEALTH_WAIT_S:.0f} s")
        time.sleep(0.5)


@contextmanager
def served(store: Path, log_path: Path) -> Iterator[str]:
    """`mixprec dashboard` for `store` on a free loopback port, until it answers; its URL.
    Stopped (by its pid) after."""
    port = free_port()
    with log_path.open("w") as log:
        server = subprocess.Popen(dashboard_command(store, port), stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for_health(server, port, log_path)
            yield f"http://127.0.0.1:{port}"
        finally:
            terminate(server, timeout=30)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium page (1400 x 1000) through Playwright; closed after."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def open_page(page: Any, url: str, run: str, name: str, timeout_s: float = 120.0) -> float:
    """Open page `name` of `run` by its deep link; seconds until its chart (or header) shows.
    Returns once the app has finished its run (Streamlit's status widget is gone), so keys
    and clicks that follow meet a page at rest."""
    started = time.monotonic()
    page.goto(f"{url}/?run={run}&page={name}", timeout=timeout_s * 1000)
    shown = CHART.get(name, f"h2:has-text('{name}')")
    page.wait_for_selector(shown, timeout=timeout_s * 1000)
    seconds = time.monotonic() - started
    wait_until_idle(page, timeout_s)
    return seconds


def wait_until_idle(page: Any, timeout_s: float = 120.0) -> None:
    """Until the app's script run has ended: the status widget ("Stop") shows while it runs."""
    page.wait_for_selector(RUNNING, state="detached", timeout=timeout_s * 1000)


RUNNING = '[data-testid="stStatusWidget"]'
