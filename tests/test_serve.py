"""`opsconsole serve`: the console in a real browser (headless Chromium over the DevTools protocol).

xterm.js draws the terminal into a canvas, so the DOM holds no text; the test reads what the browser
received over the terminal's WebSocket (Network.webSocketFrameReceived), strips the escape sequences
and looks for the monitor pane's text, then saves a screenshot (kept next to the test server's files
for a person to look at).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from opsconsole.cli.serve import console_command

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ESCAPES = re.compile(
    r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)
MONITOR_TEXT = "processed per minute, last hour"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def test_console_command_is_read_only_unless_allowed():
    assert console_command(False).endswith("-m opsconsole.cli console --read-only")
    assert console_command(True, "backlog").endswith("-m opsconsole.cli console --pane backlog")


async def _browse(url: str, devtools_port: int, shot: Path, timeout: float) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"http://127.0.0.1:{devtools_port}/json") as resp:
                    pages = [t for t in await resp.json() if t["type"] == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10_000))
            received: list[str] = []

            async def call(method: str, **params) -> dict:
                msg_id = next(ids)
                await ws.send_json({"id": msg_id, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("method") == "Network.webSocketFrameReceived":
                        received.append(_frame_text(msg["params"]["response"]))
                    if msg.get("id") == msg_id:
                        return msg.get("result", {})

            await call("Network.enable")
            await call("Page.enable")
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and MONITOR_TEXT not in ESCAPES.sub("", "".join(received)):
                try:
                    msg = await asyncio.wait_for(ws.receive_json(), timeout=1)
                except TimeoutError:
                    continue
                if msg.get("method") == "Network.webSocketFrameReceived":
                    received.append(_frame_text(msg["params"]["response"]))
            await asyncio.sleep(1.0)  # let xterm.js paint the last frames before the screenshot
            result = await call("Page.captureScreenshot", format="png")
            shot.write_bytes(base64.b64decode(result["data"]))
            return ESCAPES.sub("", "".join(received))


def _frame_text(response: dict) -> str:
    data = response.get("payloadData", "")
    if response.get("opcode") == 2:  # binary frames arrive base64-encoded
        return base64.b64decode(data).decode("utf-8", "replace")
    return data


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's package as root)"
)
def test_serve_renders_the_monitor_pane_in_headless_chromium(db_dsn, tmp_path):
    port, devtools = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    server = subprocess.Popen(
        [sys.executable, "-m", "opsconsole.cli", "--dsn", db_dsn, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    profile = tempfile.mkdtemp(prefix="oc-chromium-")
    browser = None
    try:
        wait_port(port, 20)
        browser = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={devtools}",
                "--window-size=1400,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shot = Path(os.environ.get("OPSCONSOLE_SERVE_SHOT", tmp_path / "serve.png"))
        text = asyncio.run(_browse(f"http://127.0.0.1:{port}/", devtools, shot, timeout=40))
        assert MONITOR_TEXT in text, text[-2000:]
        assert "Process batch" not in text  # read-only by default: no action in the footer
        assert shot.stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(10)
        server.terminate()
        server.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
