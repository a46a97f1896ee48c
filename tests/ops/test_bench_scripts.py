"""The benchmark scripts' bookkeeping, on CPU: JSON written as rows come (a time limit in
benchmarks/gpu_suite.sh must not lose what was measured), bench_attention's route table measured first
and written after every bucket, bench_sigreg timing GPU rows with CUDA events, run_all's common flags.
Timings are faked here: these tests check what the scripts write and call, not speed."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    """benchmarks/<name>.py as a module (the scripts put benchmarks/ on sys.path for _harness)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name == "_harness":
        return importlib.import_module("_harness")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Killed(Exception):
    """Stands in for the SIGTERM of `timeout` in gpu_suite.sh."""


def _args(out):
    import argparse  # noqa: PLC0415

    return argparse.Namespace(out=out, strict=False)


def test_the_report_json_is_written_after_every_row_then_marked_complete(tmp_path):
    harness = _load("_harness")
    out = tmp_path / "r.json"
    report = harness.Report("demo", _args(out))
    report.add("row one", 2e-3, 4e-3)
    first = json.loads(out.read_text())
    assert first["complete"] is False and [r["name"] for r in first["rows"]] == ["row one"]
    assert first["rows"][0]["ratio"] == pytest.approx(2.0)
    report.skip("gpu part", "no GPU: skipped")
    report.add("row two", 1e-3, None)
    second = json.loads(out.read_text())
    assert [r["name"] for r in second["rows"]] == ["row one", "row two"]
    assert second["skipped"] == [{"name": "gpu part", "reason": "no GPU: skipped"}]
    assert report.finish() == 0
    assert json.loads(out.read_text())["complete"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "no temporary file left behind"


@pytest.fixture
def fake_gpu_attention(monkeypatch, tmp_path):
    """bench_attention with a pretend sm_90 GPU: timings are fixed (ours 1 ms, best SDPA 2 ms), and
    ``calls`` records what ran in which order."""
    mod = _load("bench_attention")
    harness = sys.modules["_harness"]
    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "pretend H200")
    monkeypatch.setattr(mod.ops._backend, "triton_available", lambda: True)
    monkeypatch.setattr(mod, "_inputs", lambda b, h, n, d, dtype, padded, device="cuda": (None, None, None, None))
    monkeypatch.setattr(mod, "_tiles", lambda: "pinned")
    monkeypatch.setattr(mod, "matmul_tflops", lambda dtype, args: calls.append("matmul") or 900.0)

    def timing(s):
        return harness.Timing(s, s, s, 1, [s])

    def ours(fn, **kw):
        calls.append("route")
        return timing(1e-3)

    monkeypatch.setattr(mod, "measure_gpu", ours)
    monkeypatch.setattr(mod, "_best_sdpa", lambda *a: (2e-3, {"flash": timing(2e-3)}))
    out, routes = tmp_path / "bench_attention.json", tmp_path / "routes.json"
    monkeypatch.setattr(sys, "argv", ["bench_attention.py", "--out", str(out), "--routes-out", str(routes), "--no-cpu"])
    return mod, calls, out, routes


def test_routes_are_measured_and_written_before_the_gpu_rows(fake_gpu_attention, monkeypatch):
    mod, calls, out, routes = fake_gpu_attention
    from jepa.ops import attention_routes  # noqa: PLC0415

    def rows_then_killed(*a, **kw):
        calls.append("rows")
        raise _Killed

    monkeypatch.setattr(mod, "gpu_rows", rows_then_killed)
    with pytest.raises(_Killed):
        mod.main()
    assert calls.index("rows") > max(i for i, c in enumerate(calls) if c == "route")
    table = attention_routes.load_routes(routes)
    attention_routes.clear_cache()
    assert len(table) == 2 * len(mod.ROUTE_BUCKETS) and set(table.values()) == {"triton"}
    assert ("sm_90", "bfloat16", 64, 1024, False) in table
    rows = json.loads(out.read_text())
    assert rows["complete"] is False and len(rows["rows"]) == 2 * len(mod.ROUTE_BUCKETS)


def test_a_kill_during_the_routes_keeps_the_buckets_measured(fake_gpu_attention, monkeypatch):
    mod, calls, out, routes = fake_gpu_attention
    harness = sys.modules["_harness"]

    def killed_at_the_fifth(fn, **kw):
        calls.append("route")
        if len(calls) == 5:
            raise _Killed
        return harness.Timing(1e-3, 1e-3, 1e-3, 1, [1e-3])

    monkeypatch.setattr(mod, "measure_gpu", killed_at_the_fifth)
    with pytest.raises(_Killed):
        mod.main()
    entries = json.loads(routes.read_text())["entries"]
    assert [(e["dtype"], e["head_dim"], e["n"]) for e in entries] == [("bfloat16", d, n) for d, n in mod.ROUTE_BUCKETS[:4]]
    assert len(json.loads(out.read_text())["rows"]) == 4


def test_routes_only_runs_no_gpu_rows(fake_gpu_attention, monkeypatch):
    mod, calls, out, routes = fake_gpu_attention
    monkeypatch.setattr(mod, "gpu_rows", lambda *a, **kw: calls.append("rows"))
    monkeypatch.setattr(sys, "argv", sys.argv + ["--routes-only"])
    assert mod.main() == 0
    assert "rows" not in calls and "matmul" not in calls
    assert json.loads(out.read_text())["complete"] is True and routes.is_file()


def test_sigreg_gpu_rows_are_timed_with_cuda_events(monkeypatch):
    mod = _load("bench_sigreg")
    harness = sys.modules["_harness"]
    timed = []

    def events(fn, *, warmup, repeat):
        timed.append(fn)
        return harness.Timing(1e-4, 1e-4, 1e-4, repeat, [1e-4])

    def wall_clock(*a, **kw):
        raise AssertionError("a GPU row timed with the host clock")

    monkeypatch.setattr(harness, "measure_gpu", events)
    monkeypatch.setattr(harness, "measure", wall_clock)
    monkeypatch.setattr(mod, "_inputs", lambda n, d, m, dtype, device: (torch.zeros(n, d), torch.zeros(d, m)))
    report = harness.Report("sigreg", _args(None))
    args = _args(None)
    args.warmup, args.repeat = 1, 3
    mod.time_rows(report, args, "cuda", 64, 16, 8, 17, torch.float32)
    assert len(timed) == 5  # the matmul floor, then ours and eager, forward and forward+backward
    assert [r["name"].rsplit(" ", 1)[-1] for r in report.rows] == ["fwd", "fwd+bwd"]


def test_the_gpu_suite_runs_every_op_benchmark():
    script = (BENCH / "gpu_suite.sh").read_text()
    ops = {p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py")} - {"checkpoint", "trainer", "ddp", "planning", "fsdp", "world_model_step"}
    missing = [op for op in sorted(ops) if f"bench {op} " not in script]
    assert not missing, f"gpu_suite.sh does not run bench_{missing}"


def _run_all_commands(monkeypatch, tmp_path, *argv):
    """The command lines benchmarks/run_all.py would run with ``argv`` (nothing is run)."""
    mod = _load("run_all")
    cmds: list[list[str]] = []
    monkeypatch.setattr(mod.subprocess, "call", lambda cmd: cmds.append(cmd) or 0)
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--out-dir", str(tmp_path), *argv])
    assert mod.main() == 0
    return {Path(cmd[1]).stem: cmd[2:] for cmd in cmds}


def test_run_all_runs_no_training_run_by_default(monkeypatch, tmp_path):
    harness = _load("_harness")
    ran = _run_all_commands(monkeypatch, tmp_path, "--quick", "--strict", "--threads", "1")
    every = {p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_")} - {"run_all"}
    assert {p.stem for p in BENCH.glob("bench_*.py")} <= set(ran)
    assert set(ran) == every - {"quality", "quality_images", "shapes_baselines"}
    for stem, argv in ran.items():
        assert "make_parser(" in (BENCH / f"{stem}.py").read_text(), f"{stem} lacks the common flags"
        parsed = harness.make_parser(stem).parse_args(argv)  # the flags run_all passes are the harness's
        assert parsed.quick and parsed.strict and parsed.threads == 1
        assert parsed.out == tmp_path / f"{stem}.json"


def test_run_all_gives_shapes_baselines_quick_and_only_flags_it_takes(monkeypatch, tmp_path):
    ran = _run_all_commands(monkeypatch, tmp_path, "--only", "shapes_baselines", "--quick", "--strict")
    assert list(ran) == ["shapes_baselines"]
    baselines = _load("shapes_baselines")
    args = baselines.parse_args(ran["shapes_baselines"])  # argparse exits on a flag it does not take
    assert args.quick and args.out == tmp_path / "shapes_baselines.json"
    assert (args.train, args.val, args.cnn_epochs) == (300, 100, 2)
    full = baselines.parse_args([])
    assert (full.train, full.val, full.cnn_epochs) == (1200, 300, 30)
    assert baselines.parse_args(["--quick", "--train", "50"]).train == 50, "--quick keeps sizes set by hand"
