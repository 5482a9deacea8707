"""A dataset larger than memory: an image folder whose decoded size is over twice a memory limit (a cgroup v1
memory.limit_in_bytes, so root) trains an epoch, decoding into a memory-mapped file in the cache folder and
training from the map. Beside it, on a folder that fits: the in-memory path (data.cache_dir=null) against the
memory-mapped one, and the over-limit folder in memory (which the limit stops); and both folders written as litdata
chunks (python -m litvision.streaming) and streamed (data=streaming), the large one under the limit.

python benchmarks/memory.py [--limit-gb 1.5] [--images 21000] [--fits 3000]
Prints, per run: exit status, peak RSS (the run's maximum resident set), decode images/s (the run's seconds
before and after training and testing, from its metrics.json; streamed: the chunk writer's images/s, its own
process and peak RSS) and epoch images/s."""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode import upscaled  # noqa: E402

from litvision import hardware  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/memory/litvision_benchmark")


def run(name: str, folder: Path, cache: str, limit: int | None, out: Path, chunks: Path | None = None) -> dict:
    """train.py on the image folder (cache: data.cache_dir), or with `chunks` on them streamed (data=streaming,
    written from the folder first, timed as the decode)."""
    data = ["data=streaming", f"data.input_dir={chunks}"] if chunks else [
        "data=image_folder", f"data.root={folder}", f"data.cache_dir={cache}"]
    args = [sys.executable, "train.py", *data, "model=mlp", "model.hidden=[16]", "data.batch_size=256",
            "trainer.max_epochs=1", "logger=none", "callbacks.figures=null", f"hydra.run.dir={out / _slug(name)}"]
    written = None
    if chunks is not None:
        written = _peak_and_seconds([sys.executable, "-m", "litvision.streaming", str(folder), str(chunks),
                                     "--overwrite"], limit)
    args = ["/usr/bin/time", "-f", "peak_rss_kib %M", *args]  # GNU time: the run's maximum resident set
    if limit is not None:
        _fresh_group(limit)
        args = ["sh", "-c", f"echo $$ > {CGROUP}/cgroup.procs && exec " + " ".join(f"'{a}'" for a in args)]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_rss_kib")]
    report = out / _slug(name) / "metrics.json"
    row = {"run": name, "exit": done.returncode, "wall_s": wall,
           "peak_rss_gb": int(peak[-1]) / 2**20 if peak else None}
    if report.is_file():
        result = json.loads(report.read_text())
        seconds, images = result["seconds"], result["images"]
        count = images["train"] + images["val"] + images["test"]
        decode = count / (written[1] if written else seconds["total"] - seconds["fit"] - seconds["test"])
        row |= {"decode_images_per_s": decode, "epoch_images_per_s": images["train"] / seconds["fit"],
                "test_acc": result["accuracy"]}
        if written:
            row["write_peak_rss_gb"] = written[0]
    else:
        row["error"] = "killed (out of memory)" if "signal 9" in done.stderr or done.returncode in (-9, 137) else \
            [line for line in (done.stdout + done.stderr).splitlines() if "error" in line.lower()][-1:]
    print(row, flush=True)
    return row


def _peak_and_seconds(command: list[str], limit: int | None) -> tuple[float | None, float]:
    """Peak RSS (GB) and seconds of a command, under the memory limit when one is given."""
    args = ["/usr/bin/time", "-f", "peak_rss_kib %M", *command]
    if limit is not None:
        args = ["sh", "-c", f"echo $$ > {CGROUP}/cgroup.procs && exec " + " ".join(f"'{a}'" for a in args)]
        _fresh_group(limit)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_rss_kib")]
    return (int(peak[-1]) / 2**20 if peak else None), time.perf_counter() - start


def _fresh_group(limit: int) -> None:
    if CGROUP.exists():
        CGROUP.rmdir()  # a fresh group: its limits and peak start anew
    CGROUP.mkdir()
    (CGROUP / "memory.limit_in_bytes").write_text(str(limit))
    if (CGROUP / "memory.memsw.limit_in_bytes").exists():
        (CGROUP / "memory.memsw.limit_in_bytes").write_text(str(limit))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-gb", type=float, default=1.5)
    parser.add_argument("--images", type=int, default=21000, help="224x224 images of the over-limit folder")
    parser.add_argument("--fits", type=int, default=3000, help="224x224 images of the folder that fits")
    parser.add_argument("--work", type=Path, default=Path("/tmp/litvision-memory"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("a memory cgroup needs root")
    limit = int(args.limit_gb * 2**30)
    big, small = upscaled(args.work / f"big{args.images}", args.images), upscaled(args.work / f"small{args.fits}",
                                                                                 args.fits)
    machine = hardware.record()
    print(hardware.summary(machine), flush=True)
    print(f"limit {args.limit_gb} GB; decoded: {args.images * 3 * 224 * 224 / 2**30:.2f} GB over the limit, "
          f"{args.fits * 3 * 224 * 224 / 2**30:.2f} GB fitting", flush=True)
    runs = args.work / "runs"
    rows = [run("fits, in memory", small, "null", None, runs),
            run("fits, memory-mapped (first run: decodes)", small, str(args.work / "cache"), None, runs),
            run("fits, memory-mapped (cached)", small, str(args.work / "cache"), None, runs),
            run("2x the limit, memory-mapped", big, str(args.work / "cache"), limit, runs),
            run("2x the limit, in memory", big, "null", limit, runs),
            run("fits, streamed (litdata chunks)", small, "", None, runs, chunks=args.work / "chunks-small"),
            run("2x the limit, streamed (litdata chunks)", big, "", limit, runs, chunks=args.work / "chunks-big")]
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "limit_gb": args.limit_gb, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
