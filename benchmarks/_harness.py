"""Shared benchmark harness: timing (warmup, repeat, median), a results table and JSON output.

Each benchmarks/bench_<op>.py builds a :class:`Report`, adds rows with :meth:`Report.add` (times from
:func:`measure`), and ends with :meth:`Report.finish`, which prints

    name | ours | reference | ratio | floor

(``ratio`` = reference / ours, so > 1 means ours is faster; ``floor`` = the hardware limit for that
row, e.g. bytes moved over measured memory bandwidth) and writes the rows as JSON to ``--out``. The JSON is
also rewritten (atomically) after every row, skip and note with ``"complete": false``, so a run killed
by a time limit (benchmarks/gpu_suite.sh) keeps what it measured; :meth:`Report.finish` writes the
final file with ``"complete": true``.

Example::

    parser = make_parser("my op")
    args = parser.parse_args()
    report = Report("my_op", args)
    ours = measure(lambda: my_op(x), warmup=args.warmup, repeat=args.repeat)
    ref = measure(lambda: torch_ref(x), warmup=args.warmup, repeat=args.repeat)
    report.add("my_op 1M fp32", ours, ref, floor_s=bytes_moved / bandwidth)
    report.finish()
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "Timing", "Report", "apply_threads", "make_parser", "measure", "measure_gpu", "environment", "cuda_sync",
    "write_atomic",
]


@dataclass
class Timing:
    """Wall-clock seconds of ``repeat`` timed calls (after ``warmup`` untimed ones)."""

    median: float
    min: float
    max: float
    repeat: int
    values: list[float] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "repeat": self.repeat}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers (and a process killed
    mid-write) see the old file or the new one, never a truncated one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cuda_sync() -> None:
    """Wait for queued CUDA work (no-op without CUDA)."""
    import torch  # noqa: PLC0415

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def add_interpret_smoke(parser: argparse.ArgumentParser) -> None:
    """The ``--interpret-smoke`` flag of the Triton benchmarks."""
    parser.add_argument("--interpret-smoke", action="store_true",
                        help="run tiny sizes on the CPU under TRITON_INTERPRET=1 (checks the script, not speed)")


def timer(device: str, args: argparse.Namespace) -> Callable[[Callable[[], Any]], Timing]:
    """``time(fn)`` for a benchmark on ``device``: CUDA events (:func:`measure_gpu`) on a GPU, wall clock
    on the CPU, with the script's ``--warmup``/``--repeat``."""
    if device == "cuda":
        return lambda fn: measure_gpu(fn, warmup=args.warmup, repeat=args.repeat)
    return lambda fn: measure(fn, warmup=args.warmup, repeat=args.repeat)


def triton_bench_device(args: argparse.Namespace) -> str:
    """The device a Triton benchmark runs on: ``"cuda"``, or ``"cpu"`` with ``--interpret-smoke`` (which
    sets TRITON_INTERPRET=1 before anything imports triton and shrinks the run to one quick round).
    ``--quick`` caps the repeats."""
    device = "cuda"
    if args.interpret_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        device = "cpu"
        args.quick, args.repeat, args.warmup = True, 1, 0
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 5), min(args.warmup, 1)
    return device


def triton_bench_skip_reason(device: str) -> str:
    """Why a Triton benchmark cannot run on ``device`` ("" when it can)."""
    import torch  # noqa: PLC0415

    from jepa.ops import _backend  # noqa: PLC0415

    if device == "cuda" and not torch.cuda.is_available():
        return "no GPU: skipped"
    if not _backend.triton_available():
        return "no GPU: skipped (triton is not installed)"
    return ""


def copy_bandwidth(args: argparse.Namespace, device: str = "cuda") -> float:
    """Bytes per second of a device-to-device copy (read + write counted): the bandwidth floor of
    memory-bound kernels. 1 GiB (256 MiB with --quick; 1 MiB off CUDA, for smoke runs), timed with
    CUDA events on a GPU."""
    import torch  # noqa: PLC0415

    n = (256 << 20) if args.quick else (1 << 30)
    if device != "cuda":
        n = 1 << 20
    src = torch.empty(n // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    if device == "cuda":
        t = measure_gpu(lambda: dst.copy_(src), warmup=args.warmup, repeat=args.repeat)
    else:
        t = measure(lambda: dst.copy_(src), warmup=args.warmup, repeat=args.repeat)
    del src, dst
    return 2 * n / t.median


def measure_gpu(fn: Callable[[], Any], *, warmup: int = 3, repeat: int = 15) -> Timing:
    """Time a GPU ``fn()`` with CUDA events, not host clocks: ``triton.testing.do_bench`` (which also
    flushes the L2 cache between calls, so a bandwidth-bound kernel is not timed on a warm cache) when
    triton is installed, else a loop of ``torch.cuda.Event`` pairs. µs-scale kernels are then timed by the
    GPU, without the launch and synchronization latency a host timer adds to each call. ``warmup`` and
    ``repeat`` are the minimum numbers of calls (do_bench runs at least 25 ms of each)."""
    import torch  # noqa: PLC0415

    fn()
    torch.cuda.synchronize()
    try:
        from triton.testing import do_bench  # noqa: PLC0415
    except ImportError:
        do_bench = None
    values = None
    if do_bench is not None:
        try:
            once_ms = do_bench(fn, warmup=1, rep=1, return_mode="median")
            rep_ms = max(25.0, once_ms * repeat)
            values = [v / 1e3 for v in do_bench(fn, warmup=max(25.0, once_ms * warmup), rep=rep_ms, return_mode="all")]
        except (TypeError, ValueError, AssertionError):  # a Triton without return_mode="all"
            values = None
    if values is None:
        for _ in range(warmup):
            fn()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        for a, b in zip(starts, ends):
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        values = [a.elapsed_time(b) / 1e3 for a, b in zip(starts, ends)]
    return Timing(statistics.median(values), min(values), max(values), len(values), values)


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeat: int = 15,
    setup: Callable[[], Any] | None = None,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeat`` timed ones; returns their median/min/max.

    ``setup`` runs before every call, untimed; ``sync`` (e.g. :func:`cuda_sync`) runs after every call,
    inside the timed region, so asynchronous GPU work is counted.
    """
    if repeat < 1:
        raise ValueError(f"measure: repeat must be >= 1, got {repeat}")
    if warmup < 0:
        raise ValueError(f"measure: warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
        if sync is not None:
            sync()
    values = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        values.append(time.perf_counter() - t0)
    return Timing(statistics.median(values), min(values), max(values), repeat, values)


def _seconds(x: Timing | float | None) -> float | None:
    if x is None:
        return None
    return x.median if isinstance(x, Timing) else float(x)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(b) >= size:
            return f"{b / size:.2f} {unit}"
    return f"{int(b)} B"


def environment() -> dict[str, Any]:
    """Where the numbers come from: versions, threads, CPU, load, jepa._C build."""
    import torch  # noqa: PLC0415

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        env["loadavg_1m"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    try:
        from jepa import _C  # noqa: PLC0415

        env["jepa_C"] = dict(_C.build_info())
    except ImportError as exc:
        env["jepa_C"] = f"not built: {exc}"
    return env


def _cpu_snapshot() -> tuple[float, float] | None:
    """(machine busy CPU seconds, this process's CPU seconds incl. threads) or None off Linux."""
    try:
        import resource  # noqa: PLC0415

        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / ticks
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return busy, ru.ru_utime + ru.ru_stime
    except (OSError, ValueError, ImportError, AttributeError):
        return None


def make_parser(description: str) -> argparse.ArgumentParser:
    """Common options: --out JSON path, --warmup, --repeat, --quick (fewer repeats / smaller sizes)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default 3)")
    p.add_argument("--repeat", type=int, default=15, help="timed calls; the median is reported (default 15)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller problems (smoke run)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads(N) first (the C++ ops use the same count)"
    )
    return p


def apply_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (call before timing anything)."""
    n = getattr(args, "threads", None)
    if n is not None:
        if n < 1:
            raise SystemExit(f"--threads must be >= 1, got {n}")
        import torch  # noqa: PLC0415

        torch.set_num_threads(n)


class Report:
    """Rows of one benchmark script; prints the table and writes JSON on :meth:`finish`."""

    COLUMNS = ("name", "ours", "reference", "ratio", "floor")

    def __init__(self, benchmark: str, args: argparse.Namespace | None = None) -> None:
        self.benchmark = benchmark
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.targets: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.env = environment()
        self._cpu0 = _cpu_snapshot()
        self._wall0 = time.perf_counter()

    def _out_path(self) -> Path | None:
        out = getattr(self.args, "out", None)
        return None if out is None else Path(out)

    def save(self, *, complete: bool = False) -> Path | None:
        """Write the JSON to ``--out`` now (temporary file + rename: a kill never leaves half a file);
        ``complete`` marks the final write. Returns the path, or None without ``--out``."""
        out = self._out_path()
        if out is None:
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        data["complete"] = complete
        write_atomic(out, json.dumps(data, indent=2, default=str) + "\n")
        return out

    def add(
        self,
        name: str,
        ours: Timing | float,
        reference: Timing | float | None,
        *,
        floor_s: float | None = None,
        reference_name: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a row; ``ours``/``reference`` are Timings or seconds, ``floor_s`` the hardware limit."""
        o, r = _seconds(ours), _seconds(reference)
        row: dict[str, Any] = {
            "name": name,
            "ours_s": o,
            "reference_s": r,
            "reference_name": reference_name,
            "ratio": (r / o) if (r is not None and o) else None,
            "floor_s": floor_s,
            "ours_over_floor": (o / floor_s) if (floor_s and o is not None) else None,
        }
        if isinstance(ours, Timing):
            row["ours_timing"] = ours.to_json()
        if isinstance(reference, Timing):
            row["reference_timing"] = reference.to_json()
        row.update(extra)
        self.rows.append(row)
        self.save()
        return row

    def add_bytes(
        self,
        name: str,
        ours: int,
        reference: int | None,
        *,
        floor: int | None = None,
        reference_name: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a memory row (bytes instead of seconds; ``ratio`` = reference / ours, > 1: ours uses less)."""
        row: dict[str, Any] = {
            "name": name,
            "unit": "bytes",
            "ours_bytes": ours,
            "reference_bytes": reference,
            "reference_name": reference_name,
            "ratio": (reference / ours) if (reference is not None and ours) else None,
            "floor_bytes": floor,
        }
        row.update(extra)
        self.rows.append(row)
        self.save()
        return row

    def skip(self, name: str, reason: str) -> None:
        """Record a part that did not run (e.g. ``"no GPU: skipped"``) and print it."""
        self.skipped.append({"name": name, "reason": reason})
        print(f"{name}: {reason}", flush=True)
        self.save()

    def target(self, description: str, value: float, limit: float, *, higher_is_better: bool) -> bool:
        """Record whether ``value`` meets ``limit`` (>= when higher_is_better, else <=)."""
        ok = value >= limit if higher_is_better else value <= limit
        self.targets.append(
            {"target": description, "value": value, "limit": limit, "higher_is_better": higher_is_better, "met": ok}
        )
        return ok

    def note(self, text: str) -> None:
        """A line printed under the table and kept in the JSON."""
        self.notes.append(text)
        self.save()

    def table(self) -> str:
        """The rows as a ``name | ours | reference | ratio | floor`` table."""
        cells = [list(self.COLUMNS)]
        for row in self.rows:
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
            fmt, key = (_fmt_bytes, "bytes") if row.get("unit") == "bytes" else (_fmt_time, "s")
            ref = fmt(row[f"reference_{key}"])
            if row.get("reference_name"):
                ref = f"{ref} ({row['reference_name']})"
            cells.append([row["name"], fmt(row[f"ours_{key}"]), ref, ratio, fmt(row[f"floor_{key}"])])
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.COLUMNS))]
        lines = [" | ".join(c[i].ljust(widths[i]) for i in range(len(widths))).rstrip() for c in cells]
        lines.insert(1, "-|-".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "columns": list(self.COLUMNS),
            "ratio": "reference / ours (> 1: ours is faster)",
            "rows": self.rows,
            "skipped": self.skipped,
            "targets": self.targets,
            "notes": self.notes,
            "environment": self.env,
            "args": {k: str(v) for k, v in vars(self.args).items()} if self.args is not None else {},
        }

    def finish(self) -> int:
        """Print the table, targets and notes; write JSON to ``--out``; return the exit status."""
        if hasattr(os, "getloadavg"):
            self.env["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        cpu1 = _cpu_snapshot()
        if self._cpu0 is not None and cpu1 is not None:
            # CPU used by *other* processes while this benchmark ran, in cores: noise in the numbers.
            wall = max(time.perf_counter() - self._wall0, 1e-9)
            foreign = max(0.0, (cpu1[0] - self._cpu0[0]) - (cpu1[1] - self._cpu0[1])) / wall
            self.env["other_processes_cores"] = round(foreign, 2)
            if foreign > 0.2:
                self.note(
                    f"warning: other processes used {foreign:.2f} cores on average during this run; "
                    "timings are noisy, rerun on an idle machine"
                )
        print(f"\n== {self.benchmark} ==")
        print(self.table())
        for t in self.targets:
            op = ">=" if t["higher_is_better"] else "<="
            print(f"target {'met   ' if t['met'] else 'MISSED'}: {t['target']}: {t['value']:.3f} {op} {t['limit']}")
        for n in self.notes:
            print(n)
        out = self.save(complete=True)
        if out is not None:
            print(f"wrote {out}")
        sys.stdout.flush()
        strict = bool(getattr(self.args, "strict", False))
        return 1 if strict and not all(t["met"] for t in self.targets) else 0
