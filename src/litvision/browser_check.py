"""Open TensorBoard in a real (headless) browser and check that runs and their accuracy scalars show:
python -m litvision.browser_check LOGDIR [--screenshot tensorboard.png] [--expect TAG ...]
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
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_read(url + "data/plugin/scalars/tags", server, runs)
        # the time-series page draws only the cards in view: filter it down to the expected tags
        tag_filter = urllib.parse.quote("^(" + "|".join(map(re.escape, expect)) + ")$", safe="()")
        page_url = f"{url}?tagFilter={tag_filter}#timeseries"
        with tempfile.TemporaryDirectory() as profile:
            browser = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1100"]
            page = ""
            for budget in (budget_ms, 3 * budget_ms):  # a slow first render gets one more, longer try
                budgeted = [*browser, f"--virtual-time-budget={budget}"]
                page = subprocess.run([*budgeted, "--dump-dom", page_url], capture_output=True, text=True,
                                      timeout=300).stdout
                if all(text in page for text in [*runs, *expect]):
                    break
            if screenshot:
                subprocess.run([*budgeted, f"--screenshot={screenshot.resolve()}", page_url],
                               capture_output=True, timeout=300, cwd=profile)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return [text for text in [*runs, *expect] if text not in page]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_read(url: str, server: subprocess.Popen, runs: list[str], timeout: float = 60) -> None:
    """Until the server answers with scalars for every run: it reads event files after it starts listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tensorboard exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                served = json.loads(response.read())
            if all(served.get(run) for run in runs):
                return
        except OSError:
            pass
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
