"""`coun-lab serve`: the lab in a browser, through textual-serve, opened in headless Chromium.

Needs the system's Chromium (Debian: `apt-get install chromium`), driven by playwright (never a
browser that playwright downloads), and tesseract (`apt-get install tesseract-ocr`) to read the
screenshot; skipped with the reason where one is missing. Every request to anything but the local
server is blocked, so the test reaches nothing outside this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TESSERACT = shutil.which("tesseract")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to open the served app: apt-get install chromium"),
    pytest.mark.skipif(TESSERACT is None, reason="no tesseract to read the screenshot: apt-get install tesseract-ocr"),
]
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) != 0


def read_screen(png: Path) -> str:
    return subprocess.run([TESSERACT, str(png), "-"], capture_output=True, text=True, timeout=120).stdout


def open_in_browser(url: str, shot: Path, words: tuple[str, ...], timeout: float = 240) -> str:
    """Open `url` in headless Chromium and screenshot it until the screen reads `words`."""
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright").sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                       else route.abort())  # the page asks a font host too: never leave this machine
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("body.-first-byte", timeout=timeout * 1000)  # the app's first bytes
            deadline, text = time.monotonic() + timeout, ""
            while time.monotonic() < deadline:
                time.sleep(3)
                page.screenshot(path=str(shot))
                text = read_screen(shot)
                if all(w in text for w in words):
                    break
            return text
        finally:
            browser.close()


@contextmanager
def served(runs_dir: Path, cwd: Path):
    """`coun-lab serve` on a free port, for the duration; yields (url, its first line of output)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "coun_tui", "serve", "--port", str(port), "--runs-dir",
                               str(runs_dir)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = server.stdout.readline()
        deadline = time.monotonic() + 120
        while refused("127.0.0.1", port):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", first
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the app it started for the page
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_serve_shows_the_lab_in_a_browser(tmp_path, digits_model):
    with served(tmp_path / "runs", tmp_path) as (url, first):
        assert first.strip() == f"coun-lab in a browser: open {url}", first
        assert refused("127.0.0.2", int(url.rsplit(":", 1)[1]))  # bound to 127.0.0.1 alone, not every address
        shot = tmp_path / "browser.png"
        words = ("Forget", "Method", "coun-lab", "digits: 1,437 train")  # the lab, with its model loaded
        text = open_in_browser(url, shot, words)
        for word in words:
            assert word in text, f"{word!r} is not on the browser's screen:\n{text}"
