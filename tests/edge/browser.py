"""A real browser for the edge tests: Debian's headless Chromium driven by Debian's chromedriver through
Selenium, resolving only the names it is told (to ports on 127.0.0.1, every other name refused) and trusting,
beyond its built-in roots, those put in the NSS database under its own HOME.

    home = trusting_home(tmp_path / "home", pebble_root_pem)
    with chromium(home, {"www.example.com": port}, log_dir) as browser:
        page = browser.load("https://www.example.com/")

Nothing is downloaded: Selenium is handed both binaries, so Selenium Manager is skipped (and, were it called,
SE_OFFLINE=true and an SE_MANAGER_PATH naming no file make it fail in words instead). Every process the
browser started is ended when the block exits, even on failure.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CERTUTIL = "/usr/bin/certutil"


def trusting_home(home: Path, root_pem: bytes) -> Path:
    """A HOME whose `.pki/nssdb` (where Chromium on Linux reads extra roots) trusts `root_pem` to issue
    server certificates, and nothing else beyond Chromium's built-in roots."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    root = home / "root.pem"
    root.write_bytes(root_pem)
    env = {**os.environ, "HOME": str(home)}
    subprocess.run([CERTUTIL, "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True, env=env)
    subprocess.run(
        [CERTUTIL, "-A", "-d", f"sql:{nssdb}", "-t", "C,,", "-n", "pebble-root", "-i", str(root)],
        check=True,
        env=env,
    )
    return home


@dataclass(frozen=True)
class Page:
    """What the browser shows after a navigation."""

    # The network error chromedriver reported (net::ERR_...): None when it loaded, and also when Chromium
    # shows a certificate error's interstitial page (whose url is chrome-error:// as well).
    error: str | None
    url: str  # the document's own URL: chrome-error://chromewebdata/ when the navigation failed
    protocol: str
    secure_context: bool
    text: str


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def load(self, url: str) -> Page:
        """Navigates to `url` and reads the document shown (a failed navigation shows Chromium's error page
        and chromedriver reports its net::ERR_ code, which is kept rather than raised)."""
        error = None
        try:
            self.driver.get(url)
        except WebDriverException as failure:
            found = re.search(r"net::ERR_[A-Z_]+", failure.msg or "")
            if found is None:
                raise
            error = found.group()
        shown = self.driver.execute_script(
            "return [document.URL, location.protocol, window.isSecureContext,"
            " document.body ? document.body.innerText : ''];"
        )
        return Page(error, *shown)

    def certificate_sha256(self, origin: str) -> str:
        """The SHA-256 of the leaf the browser was shown by `origin` (DevTools' Network.getCertificate)."""
        table = self.driver.execute_cdp_cmd("Network.getCertificate", {"origin": origin})["tableNames"]
        return hashlib.sha256(base64.b64decode(table[0])).hexdigest()


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the browser's own user-data-dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _end(service: Service, profile: str) -> None:
    """Kills chromedriver's process group and any Chromium process left with this browser's profile."""
    process = getattr(service, "process", None)
    if process is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            process.wait(timeout=5)
    deadline = time.monotonic() + 5
    while (pids := _pids_using(profile)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@contextlib.contextmanager
def chromium(home: Path, names: Mapping[str, int], log_dir: Path) -> Iterator[Browser]:
    """Headless Chromium whose resolver maps each of `names` to 127.0.0.1:<its port> and refuses every
    other name, so nothing it does leaves the machine; HOME is `home` (see trusting_home)."""
    # The user-data-dir is also how leftover processes are found: a path no other browser uses.
    profile = tempfile.mkdtemp(prefix=f"cw-chromium-{uuid.uuid4().hex[:8]}-")
    rules = [f"MAP {name} 127.0.0.1:{port}" for name, port in names.items()]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        f"--host-resolver-rules={', '.join([*rules, 'MAP * ~NOTFOUND'])}",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    # The console's messages, for the tests that require a page to log no error.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {key: value for key, value in os.environ.items() if not key.startswith("SE_")}
    env.update({"HOME": str(home), "SE_OFFLINE": "true"})
    log_dir.mkdir(parents=True, exist_ok=True)
    service = Service(
        executable_path=CHROMEDRIVER,
        log_output=str(log_dir / f"chromedriver-{uuid.uuid4().hex[:8]}.log"),
        env=env,
        # Its own process group, so that whatever it started can be ended at once.
        popen_kw={"start_new_session": True},
    )
    driver = None
    try:
        with _offline_selenium():
            driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(20)
        # DevTools' network domain from the start: Network.getCertificate knows only what it saw.
        driver.execute_cdp_cmd("Network.enable", {})
        yield Browser(driver)
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        _end(service, profile)
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def _offline_selenium() -> Iterator[None]:
    """While the driver starts: SE_OFFLINE=true, and SE_MANAGER_PATH naming no file, so that were Selenium
    Manager ever called (it is not, both paths being given) it would fail in words, downloading nothing."""
    saved = {key: os.environ.get(key) for key in ("SE_OFFLINE", "SE_MANAGER_PATH")}
    os.environ.update({"SE_OFFLINE": "true", "SE_MANAGER_PATH": "/nonexistent/selenium-manager"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
