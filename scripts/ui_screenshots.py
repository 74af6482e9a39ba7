"""Take the README's screenshots: the job page and the report of the digits example, run for real.

    python scripts/ui_screenshots.py [--out docs/img]

Starts the API and one worker on a temporary folder (SQLite, filesystem broker), signs in through the
sign-in page in headless Chromium (Debian's `chromium`, or $KD_CHROMIUM), submits examples/digits-kd.json
unchanged through the new-job form, waits for it to succeed (about a minute on 2 CPU cores), and writes
ui-job.png (the job page, 1280 px wide) and report.png (its report.html). Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from kdservice.db import make_engine, make_sessionmaker, upgrade_database  # noqa: E402
from kdservice.security import create_api_key  # noqa: E402
from kdservice.settings import Settings  # noqa: E402

VIEWPORT = {"width": 1280, "height": 1000}
JOB_TIMEOUT_MS = 900_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the API did not start")


def take(url: str, key: str, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = os.environ.get("KD_CHROMIUM") or shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                                   "--disable-background-networking", "--disable-sync"])
        page = browser.new_context(base_url=url, viewport=VIEWPORT).new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                   else route.abort("blockedbyclient"))
        page.goto("/ui/sign-in")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/ui/jobs/new?example=digits-kd")
        page.get_by_role("button", name="Submit job").click()
        page.wait_for_url("**/ui/jobs/*")
        job_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#job-status [data-field=state]")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
        page.locator("iframe.report").wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=out / "ui-job.png")
        page.goto(f"/ui/jobs/{job_id}/report")
        page.screenshot(path=out / "report.png")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kd-screens-") as var:
        port = free_port()
        env = {**os.environ, "KD_ARTIFACT_DIR": var, "KD_BROKER_URL": "filesystem://", "KD_PORT": str(port),
               "KD_DATABASE_URL": f"sqlite:///{var}/kd.db"}
        settings = Settings(artifact_dir=Path(var), database_url=env["KD_DATABASE_URL"])
        upgrade_database(settings.database_url)
        with make_sessionmaker(make_engine(settings.database_url)).begin() as session:
            _, key = create_api_key(session, "readme")
        procs = [subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port",
                                   str(port)], cwd=REPO, env=env, start_new_session=True),
                 subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO, env=env, start_new_session=True)]
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            take(url, key, args.out)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
    print(f"wrote {args.out / 'ui-job.png'} and {args.out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
