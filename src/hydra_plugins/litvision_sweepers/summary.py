"""What both sweepers do with finished jobs: each launcher's JobReturn as a row, and the table that ends a sweep
(one row per job: its overrides, the optimized metric, test accuracy, status), best first, printed and saved in
the sweep folder as summary.csv and summary.md."""

import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from litvision import atomic_write

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One finished job of a sweep. status: "ok", "failed" or "pruned"; value: the optimized metric."""

    number: int
    overrides: list[str]
    status: str
    value: float | None
    folder: Path
    error: str = ""


def prepare_sweep_dir(config: DictConfig) -> Path:
    """The sweep folder, with the sweep's config saved in it as Hydra's own sweepers do."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    return sweep_dir


def job_of(result: JobReturn) -> Job:
    """A launcher's JobReturn as a summary row; a job that raised or returned NaN is failed."""
    hydra = result.hydra_cfg.hydra
    value: Any = result._return_value  # the exception when it failed (JobReturn.return_value would raise it)
    job = Job(number=hydra.job.num, overrides=list(result.overrides),
              status="ok", value=None, folder=Path(hydra.runtime.output_dir))
    if result.status != JobStatus.COMPLETED:
        job.status, job.error = "failed", error_text(value)
    elif isinstance(value, float) and math.isnan(value):
        job.status, job.error = "failed", "the optimized metric is NaN"
    elif value is not None:
        job.value = float(value)
    return job


def error_text(error: BaseException) -> str:
    """One line, the real reason: the innermost cause of a wrapped exception (Hydra's InstantiationException,
    torch's ProcessRaisedException carry it in their cause or text); the job's log has the traceback."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):  # a child process's traceback: its last line says it
        return lines[-1][:300]
    return f"{type(error).__name__}: {' '.join(lines)}"[:300]


def finish(sweep_dir: Path, jobs: list[Job], config: DictConfig, maximize: bool, fail_on_errors: bool = True) -> None:
    """Print and save the summary; fail the sweep (after every job ran) when any job failed and fail_on_errors."""
    log.info("\n" + summarize(sweep_dir, jobs, config.get("optimized_metric") or "value", maximize))
    from litvision.tensorboard import write_sweep_experiment

    write_sweep_experiment(sweep_dir, [job.folder for job in jobs])  # HPARAMS: what differs, ticked first
    failed = [job for job in jobs if job.status == "failed"]
    if failed and fail_on_errors:  # exit 1 with the message alone: a traceback of the sweeper would say nothing more
        log.error(f"{len(failed)} of {len(jobs)} jobs failed ({', '.join(str(j.number) for j in failed)}): "
                  f"see {sweep_dir / 'summary.md'} and each job's log")
        sys.exit(1)


def summarize(sweep_dir: Path, jobs: list[Job], metric: str, maximize: bool = True) -> str:
    """Write summary.csv and summary.md into sweep_dir; return the Markdown table."""
    settings = [dict(o.split("=", 1) for o in job.overrides if "=" in o) for job in jobs]
    keys = sorted({key for s in settings for key in s})
    varying = [key for key in keys if len({s.get(key) for s in settings}) > 1]
    common = {key: settings[0][key] for key in keys if key not in varying and key in settings[0]}
    header = ["job", "status", *varying, metric, "test/acc", "seconds", "error", "folder"]

    def rank(pair: tuple[Job, dict]) -> tuple:
        job = pair[0]
        usable = job.value is not None and not math.isnan(job.value)
        return (job.status != "ok", not usable, -job.value if usable and maximize else job.value if usable else 0)

    rows, tests = [], {}
    for job, setting in sorted(zip(jobs, settings), key=rank):
        result = _metrics(job.folder)
        tests[job.number] = result.get("metrics", {}).get("test/acc")
        seconds = result.get("seconds", {}).get("total")
        rows.append([job.number, job.status, *(setting.get(key, "") for key in varying), _fmt(job.value),
                     _fmt(tests[job.number]), _fmt(seconds, 1), job.error, job.folder.name])
    _write(sweep_dir / "summary.csv", _csv(header, rows))
    lines = [f"Sweep of {len(jobs)} jobs in {sweep_dir}: {sum(j.status == 'ok' for j in jobs)} ok, "
             f"{sum(j.status == 'failed' for j in jobs)} failed, {sum(j.status == 'pruned' for j in jobs)} pruned; "
             f"best {'highest' if maximize else 'lowest'} {metric} first."]
    if common:
        lines.append("Common overrides: " + " ".join(f"{k}={v}" for k, v in common.items()))
    lines += ["", _row(header), "|" + " --- |" * len(header)]
    lines += [_row(row) for row in rows]
    lines += _over_repeats(jobs, settings, varying, metric, tests)
    table = "\n".join(lines) + "\n"
    _write(sweep_dir / "summary.md", table)
    return table


REPEATS = ("data.fold", "seed")  # overrides whose jobs repeat one setting: folds of a cross-validation, seeds


def _over_repeats(jobs: list[Job], settings: list[dict], varying: list[str], metric: str,
                  tests: dict[int, float | None]) -> list[str]:
    """Mean and standard deviation over the ok jobs that differ only in fold or seed (k-fold cross-validation,
    repeated seeds): one row per setting of the other overrides."""
    repeated = [key for key in varying if key in REPEATS]
    if not repeated:
        return []
    others = [key for key in varying if key not in REPEATS]
    groups: dict[tuple, list[Job]] = {}
    for job, setting in zip(jobs, settings):
        if job.status == "ok":
            groups.setdefault(tuple(setting.get(key, "") for key in others), []).append(job)
    header = [*others, "jobs", f"{metric} mean", "std", "test/acc mean", "std"]
    lines = ["", f"Over {' and '.join(repeated)} (ok jobs; standard deviation of the sample):", "",
             _row(header), "|" + " --- |" * len(header)]
    for key, group in groups.items():
        values = [job.value for job in group if job.value is not None]
        accuracies = [tests[job.number] for job in group if tests[job.number] is not None]
        lines.append(_row([*key, len(group), *_mean_std(values), *_mean_std(accuracies)]))
    return lines


def _mean_std(values: list[float]) -> list[str]:
    if not values:
        return ["", ""]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return [_fmt(mean), _fmt(std)]


def _row(cells: list) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def _metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _csv(header: list[str], rows: list[list]) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a sweep folder never holds half a summary."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
