"""Open what litvision writes in a real (headless) browser, check it shows, and take screenshots:
  python tests/browser_check.py LOGDIR [--screenshot tensorboard.png] [--expect TAG ...]   TensorBoard's scalars
  python tests/browser_check.py LOGDIR --pages DIR      screenshots of the scalars, custom scalars, images, HPARAMS
  python tests/browser_check.py --mlflow RUN/mlflow.db --expect TEXT ...      the MLflow UI
  python tests/browser_check.py --optuna SWEEP/optuna.db --expect TEXT ...    optuna-dashboard
(Debian: apt-get install chromium)

Each starts the server on localhost, loads its page in headless Chromium (a fresh profile, no network but
localhost), reads the rendered page and saves a screenshot. TensorBoard draws with `?forceSVG=true`, so the chart
lines are in the page (and in headless screenshots) and are counted. Exits 1, naming what is missing.
"""

import argparse
import contextlib
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
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
LINE = re.compile(r'<path d="M-?[\d.]+,-?[\d.]+L')  # a chart line TensorBoard drew in SVG
POINT = re.compile(r'<circle cx="-?[\d.]+" cy="-?[\d.]+" r="[\d.]+" style="fill: rgb')  # a one-point series


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def render(url: str, screenshot: Path | None = None, size: str = "1600,1100", budget_ms: int = 20000,
           drawn: bool = True) -> str:
    """The page's DOM after `budget_ms` of (virtual) time; with `screenshot`, a PNG of it too (drawn: of a page
    with charts or images, taken again while they are not drawn yet)."""
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found: install it (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        browser = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                   f"--virtual-time-budget={budget_ms}"]
        page = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=300).stdout
    if screenshot:
        for attempt in range(4):  # a screenshot is a second load: taken again, with more time, while still blank
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                                f"--virtual-time-budget={budget_ms * (attempt + 1)}",
                                f"--screenshot={screenshot.resolve()}", url], capture_output=True, timeout=300, cwd=profile)
            if not drawn or not _blank(screenshot):
                break
    return page


def _blank(png: Path) -> bool:
    """Whether the page's content area (below its header, right of its side bar) holds next to nothing dark: no
    chart lines, axis labels or images drawn yet (TensorBoard's empty cards are white with light grey borders)."""
    from PIL import Image

    with Image.open(png) as image:
        width, height = image.size
        area = image.convert("L").crop((width // 5, height // 6, width * 4 // 5, height * 5 // 6))
        dark = sum(area.histogram()[:150])
    return dark < 0.003 * area.width * area.height


@contextlib.contextmanager
def serving(command: list[str], ready: str, timeout: float = 120) -> Iterator[str]:
    """Run a web server (its command gets --port PORT appended as PORT), yield its URL once `ready` (a path) answers."""
    port = _free_port()
    server = subprocess.Popen([part.replace("PORT", str(port)) for part in command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise SystemExit(f"{command[0]} exited with status {server.returncode}")
            try:
                with urllib.request.urlopen(url + ready, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(command)} did not answer at {url} within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def tensorboard(logdir: Path) -> list[str]:
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", "PORT", "--host",
            "127.0.0.1", "--load_fast=false"]


def check(logdir: Path, expect: list[str], screenshot: Path | None) -> list[str]:
    """What is missing from TensorBoard's scalars page (empty: every run and expected tag, with lines drawn)."""
    runs = _runs(logdir)
    with serving(tensorboard(logdir), "data/runs") as url:
        _wait_until_read(url + "data/plugin/timeseries/tags", runs, expect)
        page_url = f"{url}?forceSVG=true&tagFilter={_only(expect)}#timeseries"
        page, attempts = "", 5
        for attempt in range(attempts):  # headless Chromium at times leaves cards undrawn: more time at each try
            if attempt:
                time.sleep(2)
            page = render(page_url, budget_ms=20000 * (attempt + 1))
            if _missing(page, runs, expect) == [] or attempt == attempts - 1:
                if screenshot:  # of what was found, or of the last try
                    render(page_url, screenshot)
                break
    return _missing(page, runs, expect)


def pages(logdir: Path, folder: Path) -> dict[str, Path]:
    """Screenshots of TensorBoard's pages as a person opens them on this logdir: the custom-scalars charts, the
    time series (scalars and images), and HPARAMS, each checked for what it must show. The time series is Angular
    (its DOM is read); custom scalars and HPARAMS are Polymer, whose shadow DOM a dump leaves out, so what they
    show is checked in the data the server hands them."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = _runs(logdir)
    shots = {"custom_scalars": ("#custom_scalars", "data/plugin/custom_scalars/layout",
                                ["loss: train vs val", "accuracy: train vs val"]),
             "scalars": (f"?tagFilter={_only(['train/loss', 'val/loss', 'val/acc', 'test/acc'])}#timeseries", None,
                         ["train/loss", "val/acc"]),
             "images": (f"?tagFilter={_only(['test/samples', 'test/confusion_matrix', 'test/per_class'])}"
                        "#timeseries", None, ["test/samples", "test/confusion_matrix"]),
             "hparams": ("#hparams", "data/plugin/hparams/experiment", ["test/acc", "status"])}
    written = {}
    with serving(tensorboard(logdir), "data/runs") as url:
        _wait_until_read(url + "data/plugin/timeseries/tags", runs, ["val/acc"])
        for name, (where, data, texts) in shots.items():
            query, _, fragment = where.partition("#")
            page_url = f"{url}{query}{'&' if query else '?'}forceSVG=true#{fragment}"
            path = folder / f"tensorboard_{name}.png"
            missing: list[str] = []
            for attempt in range(3):  # a larger logdir takes longer to draw: more time at each try
                page = render(page_url, path, size="1400,1000", budget_ms=20000 * (attempt + 1),
                              drawn=name != "hparams")
                shown = _fetch(url + data) if data else page
                missing = [text for text in texts if text not in shown]
                if name == "scalars" and not missing:
                    missing += [f"the chart of {tag} (nothing drawn in it)" for tag in _undrawn(page, texts)]
                if not missing:
                    break
                time.sleep(2)
            if missing:
                raise SystemExit(f"TensorBoard's {name} page lacks {missing}: see {path}")
            written[name] = path
    return written


def _fetch(url: str) -> str:
    """A TensorBoard data route, as its page asks for it (HPARAMS posts its query)."""
    body = json.dumps({"experimentName": ""}).encode() if "hparams" in url else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def check_app(command: list[str], ready: str, where: str, expect: list[str], screenshot: Path | None) -> list[str]:
    """What is missing from the page `where` of a web app (MLflow's UI, optuna-dashboard) started by `command`."""
    with serving(command, ready) as url:
        page = ""
        for _ in range(4):  # single-page apps fetch their data after the first paint
            page = render(url + where, screenshot, size="1400,1000", drawn=False)
            if all(text in page for text in expect):
                break
            time.sleep(2)
    return [text for text in expect if text not in page]


def _runs(logdir: Path) -> list[str]:
    runs = sorted({str(p.parent.relative_to(logdir)) for p in logdir.rglob("events.out.tfevents.*")
                   if not p.name.endswith(".sweep")})
    if not runs:
        raise SystemExit(f"no TensorBoard event files under {logdir}")
    return runs


def _only(tags: list[str]) -> str:
    """TensorBoard's tag filter (a regex) for exactly these tags: its page draws only the cards in view."""
    return urllib.parse.quote("^(" + "|".join(map(re.escape, tags)) + ")$", safe="()")


def _missing(page: str, runs: list[str], expect: list[str]) -> list[str]:
    missing = [text for text in [*runs, *expect] if text not in page]
    if not missing:
        missing += [f"the chart of {tag} (its card is there, nothing drawn in it)" for tag in _undrawn(page, expect)]
    return missing


def _undrawn(page: str, tags: list[str]) -> list[str]:
    """The tags whose card holds no series: neither a line nor the dot TensorBoard draws for a single point (a
    test metric). A card runs from its title to the next card's title."""
    starts = sorted((page.find(f'title="{tag}"'), tag) for tag in tags)
    ends = [start for start, _ in starts[1:]] + [len(page)]
    return [tag for (start, tag), end in zip(starts, ends)
            if start < 0 or not (LINE.search(page, start, end) or POINT.search(page, start, end))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_read(url: str, runs: list[str], expect: list[str], timeout: float = 90) -> None:
    """Until the server serves the expected tags of every run, or its tags stop changing: it reads event files
    after it starts listening, a few at a time."""
    deadline, served, unchanged = time.monotonic() + timeout, None, 0
    while time.monotonic() < deadline:
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
    parser.add_argument("logdir", type=Path, nargs="?")
    parser.add_argument("--screenshot", type=Path, default=Path("tensorboard.png"))
    parser.add_argument("--expect", nargs="*", help="tags (TensorBoard) or texts (--mlflow, --optuna) that must show")
    parser.add_argument("--pages", type=Path, help="a folder for screenshots of TensorBoard's pages")
    parser.add_argument("--mlflow", type=Path, help="an MLflow store (RUN/mlflow.db): check its UI instead")
    parser.add_argument("--optuna", type=Path, help="an Optuna study's storage (SWEEP/optuna.db): optuna-dashboard")
    args = parser.parse_args()
    if args.mlflow or args.optuna:
        database = f"sqlite:///{(args.mlflow or args.optuna).resolve()}"
        command = ([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", database, "--port", "PORT",
                    "--host", "127.0.0.1", "--workers", "1"] if args.mlflow else
                   [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", database, "--port",
                    "PORT", "--host", "127.0.0.1"])
        # a local store's or study's first: the litvision experiment (MLflow's 0 is Default), the search's study
        name, ready, where = (("MLflow", "health", "#/experiments/1/runs") if args.mlflow else
                              ("optuna-dashboard", "api/studies", "dashboard/studies/1"))
        missing = check_app(command, ready, where, args.expect or [], args.screenshot)
    elif args.pages:
        shots = pages(args.logdir.resolve(), args.pages)
        print("TensorBoard pages: " + ", ".join(str(path) for path in shots.values()))
        return
    else:
        name, args.expect = "TensorBoard", args.expect or ["train/acc", "val/acc", "test/acc"]
        missing = check(args.logdir.resolve(), args.expect, args.screenshot)
    if missing:
        print(f"missing from the {name} page: {', '.join(missing)}")
        raise SystemExit(1)
    print(f"{name} shows {'every run and ' if name == 'TensorBoard' else ''}{', '.join(args.expect)}; "
          f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
