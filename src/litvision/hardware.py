"""What the machine at hand computes fast: the precision and memory layout `auto` picks, the facts every benchmark
result records beside its figures, and the machine's measured matmul and convolution peak.

Why flags and a measurement decide (2 cores each, README "Precision"): with AMX a 2048x2048 bf16 matmul runs about
7x faster than float32 (2,096 against 307 GFLOP/s, Xeon). avx512_bf16 alone predicts nothing: on a Xeon without AMX
bf16 was slower (148 against 263; conv 192 against 251 with oneDNN capped below AMX, and AirNet's epoch 0.76x), on
an AMD EPYC it is faster (a convolution 1.95x, AirNet's epoch 1.70x), so there a convolution is timed and bf16 is
picked where it runs at least BF16_PAYS times float32. A GPU with bf16 (compute capability 8.0+) trains in
bf16-mixed; an older one has fast float16 only.
"""

import functools
import itertools
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

MIXED = ("bf16-mixed", "16-mixed")
BF16_PAYS = 1.3  # bf16/float32 convolution speed from which a CPU without AMX trains in bf16 (above: 0.76x, 1.95x)


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` ("model name", "flags") in /proc/cpuinfo; None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(field)), None)
    except OSError:
        return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx512f, avx512_bf16, amx_tile, ...) from /proc/cpuinfo; empty where there are none."""
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def onednn_cap() -> str | None:
    """The instruction set oneDNN is capped at (ONEDNN_MAX_CPU_ISA, or its old name DNNL_MAX_CPU_ISA); None: none."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA"))


def cpu_has_amx() -> bool:
    """AMX tiles that oneDNN (torch's CPU convolutions and bf16 matmuls) will use: present, and not switched off
    with ONEDNN_MAX_CPU_ISA (e.g. AVX512_CORE_BF16, which makes an AMX machine compute as one without)."""
    capped = (onednn_cap() or "ALL").upper()
    return torch.cpu._is_amx_tile_supported() and ("AMX" in capped or capped in ("ALL", "DEFAULT", ""))


def accelerator_of(asked: str) -> str:
    """cpu, cuda or mps: what trainer.accelerator (cpu, gpu, cuda, mps, auto) runs on, as Lightning picks it."""
    asked = str(asked).lower()
    if asked in ("gpu", "cuda"):
        return "cuda" if torch.cuda.is_available() or asked == "cuda" else "mps"
    if asked == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return asked


def auto_precision(accelerator: str) -> tuple[str, str]:
    """trainer.precision=auto: (the precision, why), from the hardware's flags and, for a CPU with avx512_bf16 but
    no AMX, from how much faster it runs a bf16 convolution (measured once per process)."""
    if accelerator == "cuda":
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed", f"{name} computes in bfloat16"
        return "16-mixed", f"{name} has fast float16 but no bfloat16"
    if accelerator != "cpu":
        return "32-true", f"{accelerator}: float32"
    if cpu_has_amx():
        return "bf16-mixed", f"{cpu_model()} has AMX: bf16 matmuls ~7x float32"
    without = (f"has AMX, switched off (ONEDNN_MAX_CPU_ISA={onednn_cap()})" if torch.cpu._is_amx_tile_supported()
               else "has no AMX")
    if "avx512_bf16" not in cpu_flags():
        return "32-true", f"{cpu_model()} {without} and no avx512_bf16: bf16 is emulated, slower than float32"
    speedup = cpu_bf16_speedup()
    pays = speedup >= BF16_PAYS
    return ("bf16-mixed" if pays else "32-true"), (f"{cpu_model()} {without}; a bf16 convolution measured {speedup:.1f}x "
                                                   f"float32 ({'at least' if pays else 'under'} {BF16_PAYS:g}x)")


@functools.cache
def cpu_bf16_speedup(rounds: int = 6) -> float:
    """How many times faster this CPU runs an AirNet-sized 3x3 convolution (32x64x32x32 -> 128, channels_last) in
    bf16 than in float32: the two alternate and the fastest call of each counts, which other work on a shared
    machine slows less than a median (six such measurements here: 1.94-2.03x; medians of the same: 1.3-3.4x)."""
    calls, rng = [], torch.Generator().manual_seed(0)  # its own generator: the run's random draws stay untouched
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(32, 64, 32, 32, generator=rng).to(dtype, memory_format=torch.channels_last)
        w = torch.randn(128, 64, 3, 3, generator=rng).to(dtype, memory_format=torch.channels_last)
        F.conv2d(x, w, padding=1)  # warm-up: oneDNN picks and caches its kernel
        calls.append(functools.partial(F.conv2d, x, w, padding=1))
    best = [float("inf")] * 2
    for _ in range(rounds):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0] / best[1]


def resolved_precision(precision: str, accelerator: str) -> tuple[str, str | None]:
    """trainer.precision as it will run: `auto` made the precision auto_precision picks for trainer.accelerator
    (with why), any other value as it is (why: None)."""
    if str(precision) != "auto":
        return str(precision), None
    return auto_precision(accelerator_of(accelerator))


def auto_channels_last(precision: str, net: torch.nn.Module) -> bool:
    """classifier.channels_last=auto: NHWC for a convolutional network in mixed precision, where oneDNN's and
    cuDNN's bf16/fp16 kernels want it, and in float32 for one with wide convolutions (64+ channels): measured on 2
    Xeon cores without AMX, AirNet trained 1.21x faster in float32 NHWC (313 against 258 images/s), but LeNet
    (6 and 16 channels) slower (2.11 against 1.50 s an epoch: benchmarks/options.py)."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and (precision in MIXED or max(c.out_channels for c in convs) >= 64)


def machine() -> dict[str, Any]:
    """The facts a speed figure needs beside it: CPU model, cores, AMX/avx512_bf16, the GPU, versions."""
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "amx": cpu_has_amx(), "amx_present": torch.cpu._is_amx_tile_supported(), "avx512_bf16": "avx512_bf16" in cpu_flags(),
        "onednn_max_cpu_isa": onednn_cap(), "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return info


def describe(info: dict[str, Any]) -> str:
    """One line: 'Intel(R) Xeon(R) Processor, 2 cores, AMX' (or 'no AMX, avx512_bf16'), the GPU if any."""
    cpu = f"{info['cpu']}, {info['cores']} cores, " + ("AMX" if info["amx"] else
                                                      "no AMX" + (", avx512_bf16" if info["avx512_bf16"] else ""))
    if info.get("amx_present") and not info["amx"]:
        cpu += f" (AMX off: ONEDNN_MAX_CPU_ISA={info['onednn_max_cpu_isa']})"
    return cpu + (f"; {info['gpu']}" if "gpu" in info else "")


def _rate(build: Callable[[int], Callable[[], Any]], flop: Callable[[int], float], sizes: Sequence[int],
          seconds: float, device: str, calls: int = 5) -> float:
    """FLOP/s of the fastest call after warm-up, of at least `calls` calls in about `seconds` (on a GPU, each timed
    from an idle device to its end), of build(size) at the largest of `sizes` whose one call should take at most
    `seconds` at the rate the size before it ran. A peak is what the machine can do: other work on a shared host
    only slows a call (the median of three 0.3 s float32 convolutions swung 84-172 GFLOP/s on an AMD EPYC); and a CPU
    that emulates bf16 (AVX2 only) runs it at 0.4 GFLOP/s, a 43 s 2048^2 matmul, where the fixed size spent 10
    minutes measuring."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(fn: Callable[[], Any]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    for size, larger in itertools.zip_longest(sizes, sizes[1:]):
        fn = build(size)
        fn()  # warm-up: oneDNN and cuBLAS pick and cache their kernels
        fastest = timed(fn)
        if larger is None or flop(larger) * fastest / flop(size) > seconds:
            break
    start = time.perf_counter()
    for done in itertools.count(2):
        fastest = min(fastest, timed(fn))
        if done >= calls and time.perf_counter() - start >= seconds:
            return flop(size) / fastest


def peak(device: str = "cpu", seconds: float = 1.0) -> dict[str, float]:
    """The machine's measured throughput in GFLOP/s: a square matmul (2048^2 on a CPU, 8192^2 on a GPU, or smaller
    where one call would take over `seconds`) and an AirNet-sized 3x3 convolution (64x32x32 -> 128 channels,
    channels_last, in batches of 256 or fewer), each in float32 and bf16."""
    rates = {}
    sides = (256, 512, 1024, 2048) + ((4096, 8192) if device == "cuda" else ())
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16")):
        rates[f"matmul_{name}"] = _rate(functools.partial(_matmul, dtype, device), lambda n: 2 * n ** 3, sides,
                                        seconds, device) / 1e9
        rates[f"conv_{name}"] = _rate(functools.partial(_conv, dtype, device), lambda b: 2 * b * 128 * 64 * 9 * 32 * 32,
                                      (16, 64, 256), seconds, device) / 1e9
    return rates


def _matmul(dtype: torch.dtype, device: str, n: int) -> Callable[[], torch.Tensor]:
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    return lambda: a @ b


def _conv(dtype: torch.dtype, device: str, batch: int) -> Callable[[], torch.Tensor]:
    x = torch.randn(batch, 64, 32, 32, dtype=dtype, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(128, 64, 3, 3, dtype=dtype, device=device).to(memory_format=torch.channels_last)
    return lambda: F.conv2d(x, w, padding=1)


def record(seconds: float = 0.5) -> dict[str, Any]:
    """What a benchmark result records beside its figures: machine() and peak() measured now, in the same run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return machine() | {"date": time.strftime("%Y-%m-%d"), "peak_gflops": peak(device, seconds)}


def summary(record: dict[str, Any]) -> str:
    """describe() and the measured peak, for a benchmark's first line."""
    rate = {key: f"{value:,.0f}" if value >= 10 else f"{value:.2g}" for key, value in record["peak_gflops"].items()}
    return (f"{describe(record)}; measured peak GFLOP/s: matmul {rate['matmul_float32']} float32, {rate['matmul_bf16']} "
            f"bf16; conv {rate['conv_float32']} float32, {rate['conv_bf16']} bf16 (torch {record['torch']}, "
            f"{record['date']})")
