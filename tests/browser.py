"""Headless Chromium for tests: open a page, collect its console errors and media durations, take a screenshot.

    with Browser() as browser:                      # one Chromium process for several pages
        page = browser.check("file:///.../report.html", screenshot=tmp_path / "report.png")
        assert page.console_errors == [] and all(d > 0 for d in page.media_durations)
        assert not is_blank(page.screenshot)

``check`` loads the page, waits until every ``<audio>``/``<video>`` has its metadata (or failed), and returns
what a reader would have met: console errors (``console.error``, uncaught exceptions, resources that failed to
load), each media element's duration and error, the page's width against the window's (a page wider than a
phone's screen scrolls sideways) and a full-page screenshot.

It speaks the DevTools protocol over a pipe (``--remote-debugging-pipe``: NUL-terminated JSON on the
browser's file descriptors 3 and 4), so it needs neither a websocket client nor Playwright and its browser
download: only the Debian ``chromium`` (``tools/setup.sh --dev`` installs it as root). Tests mark themselves
``@requires_chromium`` and are skipped, with the reason, where it is missing. ``VQAUDIO_CHROMIUM`` names
another executable.

Also a command, to look at a page the way the tests do::

    python tests/browser.py report/report.html --screenshot shot.png [--width 390 --mobile]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import select
import shutil
import subprocess
import tempfile
import time
from base64 import b64decode
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import pytest


def find_chromium() -> str | None:
    """The Chromium executable: ``$VQAUDIO_CHROMIUM``, else chromium / chromium-browser / google-chrome on PATH."""
    named = os.environ.get("VQAUDIO_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not found on PATH, so the browser checks are skipped: apt-get install chromium "
    "(tools/setup.sh --dev does it as root) or set VQAUDIO_CHROMIUM",
)

# after the load event: wait for every media element's metadata (or its error), then describe the page
_MEDIA_SCRIPT = """
(async (timeoutMs) => {
  const media = [...document.querySelectorAll('audio, video')];
  const settle = (element) => new Promise((resolve) => {
    const describe = () => resolve({
      source: (element.currentSrc || element.src || '').slice(0, 60),
      duration: Number.isFinite(element.duration) ? element.duration : null,
      error: element.error ? element.error.code : null,
    });
    if (element.readyState >= 1 || element.error) return describe();
    element.addEventListener('loadedmetadata', describe, {once: true});
    element.addEventListener('error', describe, {once: true});
    if (element.preload === 'none') { element.preload = 'metadata'; element.load(); }
    setTimeout(describe, timeoutMs);
  });
  const states = await Promise.all(media.map(settle));
  return {
    media: states,
    title: document.title,
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
  };
})(%d)
"""
# before that, for a page that builds itself after loading: poll a condition until it holds (or time runs out)
_WAIT_SCRIPT = """
(async (timeoutMs) => {
  const condition = () => (%s);  // spliced in, not eval'd: a page's CSP may forbid eval
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
})(%d)
"""
_MAX_SCREENSHOT_HEIGHT = 16000  # pixels: Chromium's texture limit is 16384


class MediaState(NamedTuple):
    source: str  # the first 60 characters of its URL
    duration: float  # seconds; NaN when the metadata never loaded
    error: int | None  # MediaError code (2 network, 3 decode, 4 source not supported), None if fine


class PageCheck(NamedTuple):
    """What ``Browser.check`` found on a page."""

    url: str
    title: str
    console_errors: list[str]  # console.error/assert, uncaught exceptions, failed loads, in order
    media: list[MediaState]  # every <audio> and <video>, in document order
    scroll_width: int  # CSS pixels: the page's width; above ``viewport_width`` it scrolls sideways
    viewport_width: int  # the layout viewport (documentElement.clientWidth): the window, or a phone's screen
    screenshot: Path | None  # the full page as PNG, when asked for

    @property
    def media_durations(self) -> list[float]:
        return [state.duration for state in self.media]


class BrowserError(RuntimeError):
    """Chromium did not start, answered with an error, or did not answer in time."""


class Browser:
    """One headless Chromium process, driven over the DevTools protocol; a context manager.

    Args:
        executable: the browser (default ``CHROMIUM``).
        timeout: seconds any one step (start, page load, media metadata) may take.
    """

    def __init__(self, executable: str | None = None, timeout: float = 30.0) -> None:
        executable = executable or CHROMIUM
        if executable is None:
            raise BrowserError("no Chromium found: apt-get install chromium, or set VQAUDIO_CHROMIUM")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="vqaudio-chromium-")
        self._log = open(Path(self._profile) / "stderr.log", "w+b")  # noqa: SIM115 (closed in close())
        # the browser reads commands on its fd 3 and writes answers on its fd 4
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # copies above 10, so that moving them onto 3 and 4 in the child never overwrites one another
        child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
        child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
        for fd in (to_browser_read, from_browser_write):
            os.close(fd)

        def onto_3_and_4() -> None:
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        command = [
            executable,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",  # as root (CI containers) Chromium refuses to start with its sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers have a small /dev/shm
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={self._profile}",
            "about:blank",
        ]
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                pass_fds=(3, 4),
                preexec_fn=onto_3_and_4,
            )
        finally:
            os.close(child_read)
            os.close(child_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        try:
            self._call("Browser.getVersion")
        except BrowserError:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------
    def check(
        self,
        url: str,
        screenshot: str | Path | None = None,
        width: int = 1280,
        height: int = 900,
        mobile: bool = False,
        ready: str | None = None,
    ) -> PageCheck:
        """Open ``url`` in a new tab of ``width`` x ``height`` CSS pixels and report what it shows.

        Args:
            url: ``file://`` or ``http://`` address.
            screenshot: where to save a full-page PNG (None: no screenshot).
            width, height: the window (``mobile``: a phone's viewport and touch, at device scale 2).
            ready: a JavaScript condition to wait for after the load event (a page that fetches and builds its
                players afterwards); BrowserError when it does not hold within ``timeout``.
        Returns:
            PageCheck.
        """
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Log"):
                self._call(f"{domain}.enable", session=session)
            self._call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile},
                session=session,
            )
            self._events = [event for event in self._events if event.get("sessionId") != session]
            self._call("Page.navigate", {"url": url}, session=session)
            self._wait_for("Page.loadEventFired", session)
            if ready is not None and not self._evaluate(
                _WAIT_SCRIPT % (ready, int(self.timeout * 1000)), session
            ):
                raise BrowserError(f"{url}: {ready} did not hold within {self.timeout:g} s")
            found = self._evaluate(_MEDIA_SCRIPT % int(self.timeout * 1000), session)
            path = None
            if screenshot is not None:
                path = Path(screenshot)
                self._screenshot(path, session)
            errors = self._console_errors(session)
        finally:
            self._call("Target.closeTarget", {"targetId": target})
        return PageCheck(
            url=url,
            title=found["title"],
            console_errors=errors,
            media=[
                MediaState(
                    state["source"],
                    math.nan if state["duration"] is None else float(state["duration"]),
                    state["error"],
                )
                for state in found["media"]
            ],
            scroll_width=int(found["scrollWidth"]),
            viewport_width=int(found["clientWidth"]),
            screenshot=path,
        )

    def close(self) -> None:
        """Close the browser (killing it if it does not quit) and remove its temporary profile."""
        if self._process.poll() is None:
            try:
                self._send("Browser.close")
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------
    def _evaluate(self, expression: str, session: str) -> Any:
        answer = self._call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"the page script failed: {answer['exceptionDetails']}")
        return answer["result"]["value"]

    def _screenshot(self, path: Path, session: str) -> None:
        size = self._call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": math.ceil(size["width"]),
            "height": min(math.ceil(size["height"]), _MAX_SCREENSHOT_HEIGHT),
            "scale": 1,
        }
        shot = self._call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session=session,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b64decode(shot["data"]))

    def _console_errors(self, session: str) -> list[str]:
        errors = []
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
                errors.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(f"uncaught: {details.get('exception', {}).get('description', details['text'])}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                url = entry.get("url", "")
                url = url[:60] + "..." if url.startswith("data:") else url
                errors.append(f"{entry['source']}: {entry['text']} {url}".rstrip())
        return errors

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._receive(deadline))

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        message_id = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") != message_id:
                self._events.append(message)
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            return message["result"]

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(remaining, 0))
            if not ready:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s{self._stderr_tail()}")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium quit (exit code {self._process.poll()}){self._stderr_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip().splitlines()[-5:]
        return ("; its last output: " + " | ".join(tail)) if tail else ""


def image_spread(path: str | Path) -> tuple[int, float]:
    """(distinct colours, standard deviation of the grey levels) of an image: a blank page has 1 and 0."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 24) or []
        grey = rgb.convert("L")
        histogram = grey.histogram()
    total = sum(histogram)
    mean = sum(level * count for level, count in enumerate(histogram)) / total
    variance = sum(count * (level - mean) ** 2 for level, count in enumerate(histogram)) / total
    return len(colours), math.sqrt(variance)


def is_blank(path: str | Path) -> bool:
    """Whether an image is (nearly) one colour: fewer than 16 colours or almost no grey-level spread."""
    colours, spread = image_spread(path)
    return colours < 16 or spread < 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="a file or an http(s) URL")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a full-page PNG here")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--mobile", action="store_true", help="a phone's viewport (device scale 2, touch)")
    args = parser.parse_args()
    url = args.page if "://" in args.page else Path(args.page).resolve().as_uri()
    with Browser() as browser:
        page = browser.check(url, args.screenshot, args.width, args.height, args.mobile)
    print(
        f"{page.title!r}: {len(page.media)} media, page {page.scroll_width} px wide in {page.viewport_width}"
    )
    for state in page.media:
        print(f"  {state.duration:.3f} s  error {state.error}  {state.source}")
    for error in page.console_errors:
        print(f"  error: {error}")
    if page.screenshot is not None:
        print(f"screenshot: {page.screenshot} (colours, grey spread: {image_spread(page.screenshot)})")


if __name__ == "__main__":
    main()
