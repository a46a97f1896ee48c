"""Tests for jepa.loggers."""

from __future__ import annotations

import csv
import logging
import math
import subprocess
import sys
import types

import pytest
import torch
import yaml

from jepa.config.config import Config
from jepa.loggers import (
    BaseLogger,
    ConsoleLogger,
    CSVLogger,
    MultiLogger,
    TensorBoardLogger,
    WandbLogger,
    create_logger,
    read_csv_metrics,
)


# ------------------------------------------------------------------------------ CSV
def test_csv_round_trip_with_new_keys(tmp_path):
    lg = CSVLogger(tmp_path / "logs")
    lg.log_metrics({"train/loss": 0.123456789, "lr": 1e-3}, step=0)
    lg.log_metrics({"train/loss": 0.1, "lr": 5e-4, "val/loss": 0.2}, step=10)  # new key later
    lg.log_metrics({"train/loss": torch.tensor(0.05), "lr": 1}, step=20)  # tensor + int values
    # flushed on each call: readable before close
    rows = read_csv_metrics(tmp_path / "logs" / "metrics.csv")
    assert len(rows) == 7
    lg.close()
    with open(tmp_path / "logs" / "metrics.csv", newline="") as f:
        raw = list(csv.reader(f))
    assert raw[0] == ["step", "metric", "value"]
    got = [(int(s), m, float(v)) for s, m, v in raw[1:]]
    assert got == [
        (0, "train/loss", 0.123456789),
        (0, "lr", 1e-3),
        (10, "train/loss", 0.1),
        (10, "lr", 5e-4),
        (10, "val/loss", 0.2),
        (20, "train/loss", float(torch.tensor(0.05))),
        (20, "lr", 1.0),
    ]


def test_csv_appends_on_resume_and_refuses_foreign_file(tmp_path):
    with CSVLogger(tmp_path) as lg:
        lg.log_metrics({"a": 1.0}, 1)
    with CSVLogger(tmp_path) as lg:
        lg.log_metrics({"a": 2.0}, 2)
    assert read_csv_metrics(tmp_path / "metrics.csv") == [(1, "a", 1.0), (2, "a", 2.0)]
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="other.csv"):
        CSVLogger(tmp_path, name="other.csv")


def test_csv_nan_and_hparams(tmp_path):
    lg = CSVLogger(tmp_path)
    lg.log_metrics({"loss": float("nan")}, 3)
    lg.log_hyperparams({"lr": 1e-3, "betas": (0.9, 0.999), "path": tmp_path, "nested": {"k": torch.tensor(2)}})
    lg.close()
    (row,) = read_csv_metrics(tmp_path / "metrics.csv")
    assert row[:2] == (3, "loss") and math.isnan(row[2])
    hp = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    assert hp == {"lr": 1e-3, "betas": [0.9, 0.999], "path": str(tmp_path), "nested": {"k": 2}}


def test_csv_hparams_from_config(tmp_path):
    with CSVLogger(tmp_path) as lg:
        lg.log_hyperparams(Config())
    hp = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    assert hp == Config().to_dict()


def test_bad_arguments_name_value(tmp_path):
    lg = CSVLogger(tmp_path)
    with pytest.raises(TypeError, match="metrics\\['loss'\\].*str"):
        lg.log_metrics({"loss": "high"}, 1)
    with pytest.raises(ValueError, match="step.*-1"):
        lg.log_metrics({"loss": 1.0}, -1)
    with pytest.raises(TypeError, match="step.*float"):
        lg.log_metrics({"loss": 1.0}, 1.5)
    with pytest.raises(TypeError, match="metrics must be a mapping"):
        lg.log_metrics([1.0], 1)
    with pytest.raises(ValueError, match="name.*'a/b.csv'"):
        CSVLogger(tmp_path, name="a/b.csv")
    with pytest.raises(ValueError, match="log_every.*0"):
        ConsoleLogger(log_every=0)
    lg.close()


def test_close_idempotent_and_use_after_close(tmp_path):
    lg = CSVLogger(tmp_path)
    lg.close()
    lg.close()
    assert lg.closed
    with pytest.raises(RuntimeError, match="after close"):
        lg.log_metrics({"a": 1.0}, 0)
    c = ConsoleLogger()
    c.close()
    c.close()


# -------------------------------------------------------------------------- console
def test_console_format(capsys):
    lg = ConsoleLogger()
    lg.log_metrics({"train/loss": 0.123449, "lr": 1e-3}, 10)
    lg.log_metrics({"big": 123456.0, "zero": 0.0, "x": float("nan")}, 11)
    assert capsys.readouterr().out.splitlines() == [
        "step 10 | train/loss 0.1234 | lr 1.00e-03",
        "step 11 | big 1.23e+05 | zero 0 | x nan",
    ]


def test_console_log_every_and_logging_logger(caplog):
    pylog = logging.getLogger("jepa.test_loggers")
    lg = ConsoleLogger(log_every=5, stream=pylog)
    with caplog.at_level(logging.INFO, logger="jepa.test_loggers"):
        for step in range(11):
            lg.log_metrics({"loss": 1.0}, step)
    assert [r.getMessage() for r in caplog.records] == [f"step {s} | loss 1.0000" for s in (0, 5, 10)]


# ---------------------------------------------------------------------- tensorboard
def test_tensorboard_round_trip(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lg = TensorBoardLogger(tmp_path, name="run1")
    lg.log_metrics({"train/loss": 0.5, "lr": 1e-3}, 1)
    lg.log_metrics({"train/loss": 0.25, "val/loss": 0.3}, 2)
    lg.log_hyperparams({"lr": 1e-3})
    lg.close()
    lg.close()
    assert (tmp_path / "run1" / "hparams.yaml").exists()
    acc = EventAccumulator(str(tmp_path / "run1"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "lr", "val/loss"}
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(1, 0.5), (2, 0.25)]
    assert acc.Scalars("lr")[0].value == pytest.approx(1e-3)


def test_tensorboard_missing_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'jepa-torch\[tensorboard\]'"):
        TensorBoardLogger(tmp_path, "x")


def test_optional_backends_not_imported_at_import_time():
    code = "import sys, jepa.loggers; print(sorted(m for m in ('tensorboard', 'wandb', 'torch.utils.tensorboard') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- wandb
class _FakeRun:
    def __init__(self, calls):
        self.calls = calls
        self.config = types.SimpleNamespace(update=lambda params, **kw: calls.append(("config.update", params, kw)))

    def log(self, metrics, step=None):
        self.calls.append(("log", metrics, step))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []
    fake = types.ModuleType("wandb")

    def init(**kwargs):
        calls.append(("init", kwargs))
        return _FakeRun(calls)

    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return calls


def test_wandb_with_fake_module(tmp_path, fake_wandb):
    lg = WandbLogger("proj", name="run", save_dir=tmp_path / "wb", config={"lr": 1e-3})
    lg.log_metrics({"train/loss": 0.5}, 7)
    lg.log_hyperparams({"batch_size": 8})
    lg.close()
    lg.close()
    assert fake_wandb == [
        ("init", {"project": "proj", "name": "run", "mode": "offline", "dir": str(tmp_path / "wb"), "config": {"lr": 1e-3}}),
        ("log", {"train/loss": 0.5}, 7),
        ("config.update", {"batch_size": 8}, {"allow_val_change": True}),
        ("finish",),
    ]
    assert (tmp_path / "wb").is_dir()


def test_wandb_missing_and_bad_mode(monkeypatch, fake_wandb):
    with pytest.raises(ValueError, match="mode.*'cloud'"):
        WandbLogger("p", mode="cloud")
    with pytest.raises(ValueError, match="project"):
        WandbLogger("")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install 'jepa-torch\[wandb\]'"):
        WandbLogger("p")


# ------------------------------------------------------------------------ multi
class _Recorder:
    def __init__(self, fail_close=False):
        self.calls = []
        self.fail_close = fail_close

    def log_metrics(self, metrics, step):
        self.calls.append(("m", metrics, step))

    def log_hyperparams(self, params):
        self.calls.append(("h", params))

    def close(self):
        self.calls.append(("c",))
        if self.fail_close:
            raise OSError("disk gone")


def test_multilogger_fan_out(tmp_path):
    a, b = _Recorder(), _Recorder()
    only_metrics = types.SimpleNamespace(got=[])
    only_metrics.log_metrics = lambda m, s: only_metrics.got.append((m, s))
    with MultiLogger([a, b, only_metrics]) as ml:
        ml.log_metrics({"x": 1}, 3)
        ml.log_hyperparams({"lr": 0.1})
    for r in (a, b):
        assert r.calls == [("m", {"x": 1.0}, 3), ("h", {"lr": 0.1}), ("c",)]
    assert only_metrics.got == [({"x": 1.0}, 3)]
    with pytest.raises(TypeError, match=r"loggers\[1\]"):
        MultiLogger([a, object()])


def test_multilogger_close_closes_all_then_raises():
    a, b = _Recorder(fail_close=True), _Recorder()
    ml = MultiLogger([a, b])
    with pytest.raises(OSError, match="disk gone"):
        ml.close()
    assert b.calls == [("c",)]
    ml.close()  # idempotent: no second close of the children
    assert b.calls == [("c",)]


# ---------------------------------------------------------------------- factory
def _config(tmp_path, loggers, **kw):
    cfg = Config()
    cfg.logging.output_dir = str(tmp_path / "run")
    cfg.logging.loggers = loggers
    for k, v in kw.items():
        setattr(cfg.logging, k, v)
    return cfg


def test_create_logger_names_to_types(tmp_path, fake_wandb):
    assert create_logger(_config(tmp_path, [])) is None
    lg = create_logger(_config(tmp_path, ["csv"]))
    assert isinstance(lg, CSVLogger) and lg.path == tmp_path / "run" / "logs" / "metrics.csv"
    lg.close()
    assert isinstance(create_logger(_config(tmp_path, ["console"])), ConsoleLogger)

    names = ["console", "csv", "wandb"]
    if _has_tensorboard():
        names.append("tensorboard")
    ml = create_logger(_config(tmp_path, names, experiment_name="exp", wandb_project="proj"))
    assert isinstance(ml, MultiLogger) and isinstance(ml, BaseLogger)
    types_by_name = {"console": ConsoleLogger, "csv": CSVLogger, "wandb": WandbLogger, "tensorboard": TensorBoardLogger}
    assert [type(x) for x in ml.loggers] == [types_by_name[n] for n in names]
    init = fake_wandb[0][1]
    assert init["project"] == "proj" and init["name"] == "exp" and init["mode"] == "offline"
    assert init["dir"] == str(tmp_path / "run" / "logs")
    assert init["config"] == Config().to_dict() | {"logging": init["config"]["logging"]}
    if _has_tensorboard():
        assert ml.loggers[-1].log_dir == tmp_path / "run" / "logs" / "tensorboard" / "exp"
    ml.close()


def test_create_logger_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'mlflow'.*\['console', 'csv', 'tensorboard', 'wandb'\]"):
        create_logger(_config(tmp_path, ["csv", "mlflow"]))
    with pytest.raises(ValueError, match="once"):
        create_logger(_config(tmp_path, ["csv", "csv"]))
    with pytest.raises(TypeError, match="Config"):
        create_logger({"logging": {}})


def test_trainer_style_duck_typing(tmp_path):
    """The trainer only checks hasattr(logger, 'log_metrics') and calls it positionally."""
    lg = create_logger(_config(tmp_path, ["csv"]))
    assert hasattr(lg, "log_metrics")
    lg.log_metrics({"train/loss": 1.5}, 4)
    lg.close()
    assert read_csv_metrics(tmp_path / "run" / "logs" / "metrics.csv") == [(4, "train/loss", 1.5)]


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
