"""A real (headless) Chromium for the report pages: shared by tests/test_report.py and
tests/test_plan.py (a plain module, not a conftest). The product page has no script; `dump_dom`
loads a copy of it with tests/page_probe.js injected, which records errors and how the page
rendered into the DOM that --dump-dom prints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("page_probe.js")


def chromium() -> str:
    """The chromium command; installs Debian's (as root) when it is missing, else skips saying why."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True, timeout=1200,
                       env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {exc}")
    path = shutil.which("chromium")
    if not path:
        pytest.skip("apt-get installed chromium but no `chromium` command is on PATH")
    return path


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", f"--user-data-dir={profile}",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120,
    )


def dump_dom(browser: str, page: Path, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """The DOM of `page` after it loaded, with the probe's #page-status and #console-errors in it.
    The page is copied into `scratch` with the probe as the first script of its head (its pictures
    are data URIs: the copy shows the same)."""
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text and "<script" not in text, "the product page carries no script"
    probed = scratch / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", f"<head>\n<script>{PROBE.read_text()}</script>", 1), encoding="utf-8")
    return headless(browser, scratch / "profile-dom", *args, "--dump-dom", probed.resolve().as_uri())
