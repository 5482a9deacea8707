"""Open TensorBoard in a real (headless) browser and check that runs and their accuracy scalars show:
python tests/browser_check.py LOGDIR [--screenshot tensorboard.png] [--expect TAG ...]
(Debian: apt-get install chromium)

Starts `tensorboard --logdir LOGDIR` on localhost, loads its scalars page in headless Chromium (a fresh profile,
no network but localhost), reads the rendered page and saves a screenshot. Exits 1, naming what is missing, if a
run or an expected tag does not appear.
"""

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def check(logdir: Path, expect: list[str], screenshot: Path | None, budget_ms: int = 20000) -> list[str]:
    """What is missing from the rendered page (empty: all there)."""
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found: install it (Debian: apt-get install chromium)")
    runs = sorted(str(p.parent.relative_to(logdir)) for p in logdir.rglob("events.out.tfevents.*"))
    if not runs:
        raise SystemExit(f"no TensorBoard event files under {logdir}")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                               "--host", "127.0.0.1", "--load_fast=false"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_read(url + "data/plugin/timeseries/tags", server, runs, expect)  # what the page asks for
        # the time-series page draws only the cards in view: filter it down to the expected tags
        tag_filter = urllib.parse.quote("^(" + "|".join(map(re.escape, expect)) + ")$", safe="()")
        page_url = f"{url}?tagFilter={tag_filter}#timeseries"
        page, attempts = "", 5
        for attempt in range(attempts):  # headless Chromium at times leaves the filtered cards unrendered a while
            if attempt:
                time.sleep(2)
            with tempfile.TemporaryDirectory() as profile:
                browser = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1100",
                           f"--virtual-time-budget={budget_ms}"]
                page = subprocess.run([*browser, "--dump-dom", page_url], capture_output=True, text=True,
                                      timeout=300).stdout
                if all(text in page for text in [*runs, *expect]) or attempt == attempts - 1:
                    if screenshot:  # of what was found, or of the last try
                        subprocess.run([*browser, f"--screenshot={screenshot.resolve()}", page_url],
                                       capture_output=True, timeout=300, cwd=profile)
                    break
    finally:
        server.terminate()
        server.wait(timeout=30)
    return [text for text in [*runs, *expect] if text not in page]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_read(url: str, server: subprocess.Popen, runs: list[str], expect: list[str],
                     timeout: float = 90) -> None:
    """Until the server serves the expected tags of every run, or its tags stop changing: it reads event files
    after it starts listening, a few at a time."""
    deadline, served, unchanged = time.monotonic() + timeout, None, 0
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tensorboard exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                now = json.loads(response.read())["scalars"]["runTagInfo"]
        except (OSError, KeyError, ValueError):
            now = None
        if now and all(tag in now.get(run, []) for run in runs for tag in expect):
            return
        unchanged = unchanged + 1 if now and now == served else 0
        if unchanged >= 6:  # three seconds without news: all there is has been read
            return
        served = now
        time.sleep(0.5)
    raise SystemExit(f"tensorboard did not serve the scalars of {', '.join(runs)} at {url} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path)
    parser.add_argument("--screenshot", type=Path, default=Path("tensorboard.png"))
    parser.add_argument("--expect", nargs="*", default=["train/acc", "val/acc", "test/acc"], help="tags that must show")
    args = parser.parse_args()
    missing = check(args.logdir.resolve(), args.expect, args.screenshot)
    if missing:
        print(f"missing from the TensorBoard page: {', '.join(missing)}")
        raise SystemExit(1)
    print(f"TensorBoard shows every run and {', '.join(args.expect)}; screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
