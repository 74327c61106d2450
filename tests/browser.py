"""Open an HTML report the way a reader does: headless Chromium, 1280 px wide.

:func:`inspect_page` loads a copy of the page with a small probe script appended; after the
``load`` event the probe writes, into the DOM that Chromium dumps, how many images there are,
which did not decode (``naturalWidth`` 0), and how wide the document is. Console messages
(``--enable-logging=stderr``) come back too: the reports have no script of their own, so any
console line is an error. :func:`screenshot` writes a PNG.

No Chromium is a test failure with the sentence that says how to install it, never a skip.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

WIDTH = 1280
PHONE = 390
NARROWEST_WINDOW = 500
"""Headless Chromium never makes its window narrower; a narrower page is framed at its width."""
INSTALL = "apt-get install -y chromium (Debian/Ubuntu; make test does this when it is missing)"
_PROBE = (
    '<script>window.addEventListener("load",function(){'
    "var imgs=Array.from(document.images);"
    "var out={images:imgs.length,"
    "broken:imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);}).map(function(i){return i.alt;}),"
    "scrollWidth:document.documentElement.scrollWidth,clientWidth:document.documentElement.clientWidth,"
    "scrollHeight:document.documentElement.scrollHeight,"
    'sections:Array.from(document.querySelectorAll("section[id]")).map(function(s){return s.id;})};'
    'var p=document.createElement("pre");p.id="browser-probe";p.textContent=JSON.stringify(out);'
    "(window.frameElement?parent.document.body:document.body).appendChild(p);});</script>"
)
_CONSOLE = re.compile(r":CONSOLE[:(]")


@dataclass(frozen=True)
class PageReport:
    """What the browser saw."""

    images: int
    broken_images: list[str]
    scroll_width: int
    client_width: int
    scroll_height: int
    sections: list[str]
    console: list[str]
    dom: str


def chromium() -> str:
    """The Chromium binary; fails the test (no skip) with how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"Chromium is needed for the browser tests and was not found on PATH; install it: {INSTALL}")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # CI and containers run as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def inspect_page(page: Path, width: int = WIDTH) -> PageReport:
    """Load ``page`` (a copy, with the probe appended) at ``width`` px and report what happened."""
    page = Path(page)
    text = page.read_text()
    assert "</body>" in text, f"{page} has no </body>; it is not a whole HTML page"
    with tempfile.TemporaryDirectory(prefix="crosslm-browser-") as folder:
        probed = Path(folder) / page.name
        probed.write_text(_framed(text.replace("</body>", _PROBE + "</body>"), width, 900))
        done = _run(
            [
                "--enable-logging=stderr",
                "--v=0",
                f"--window-size={max(width, NARROWEST_WINDOW)},900",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probed.as_uri(),
            ],
            Path(folder) / "profile",
        )
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    found = re.search(r'<pre id="browser-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe never ran (the page did not finish loading); stderr: {done.stderr[-2000:]}"
    probe = json.loads(html.unescape(found.group(1)))
    console = [line for line in done.stderr.splitlines() if _CONSOLE.search(line)]
    return PageReport(
        images=probe["images"],
        broken_images=probe["broken"],
        scroll_width=probe["scrollWidth"],
        client_width=probe["clientWidth"],
        scroll_height=probe["scrollHeight"],
        sections=probe["sections"],
        console=console,
        dom=done.stdout,
    )


def screenshot(page: Path, out: Path, width: int = WIDTH, height: int = 2400) -> Path:
    """A PNG of the top ``height`` px of ``page`` at ``width`` px."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crosslm-browser-") as folder:
        shown = Path(folder) / page.name
        shown.write_text(_framed(page.read_text(), width, height))
        done = _run(
            [
                f"--window-size={max(width, NARROWEST_WINDOW)},{height}",
                "--virtual-time-budget=10000",
                f"--screenshot={out}",
                shown.as_uri(),
            ],
            Path(folder) / "profile",
        )
    assert done.returncode == 0 and out.is_file(), f"chromium wrote no screenshot: {done.stderr[-2000:]}"
    return out


def _framed(text: str, width: int, height: int) -> str:
    """``text`` as is, or, below the narrowest window, inside a same-origin frame ``width`` px wide."""
    if width >= NARROWEST_WINDOW:
        return text
    return (
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe style="width:{width}px;height:{height}px;border:0" srcdoc="{html.escape(text, quote=True)}">'
        "</iframe></body></html>"
    )
