"""Representation quality of ``jepa train --data DIR`` on the procedural shapes set, per recipe and seed.

The set (``jepa.data.synthetic``): 10 shape classes of random colour, size, position and small
rotation on textured backgrounds, 1,200 training and 300 validation PNGs of 32x32 pixels written in
the ImageNet layout. The class does not depend on colour or position, so raw pixels probe near
chance. For every recipe and seed the script runs the command users run::

    jepa train --data DIR --image-size 32 --patch-size 4 --epochs 30 --seed S [--config RECIPE.yaml]

and reads its ``metrics.json``: linear-probe accuracy (logistic regression on standardised
features, fit on the training images, scored on the validation images) of the pretrained ViT, the
same ViT at random init and the raw pixels, with 10 labels per class and with all labels.

Recipes (the shipped ``ijepa`` config, which ``jepa train --data`` uses, with overrides of the
recipe keys ``model.target_encoder`` and ``loss.regularizer``; see docs/guides/objectives.md; a
recipe whose overrides are the shipped values runs without ``--config``):

* ``ema``: plain I-JEPA (EMA target, smooth-L1 to the layer-normed target tokens, no regulariser);
* ``ema_vc``: the same plus the variance/covariance regulariser on a projector of the pooled
  context (``loss.var_weight``/``cov_weight`` 1, projector 256-256);
* ``ema_vc_pooled``: the regulariser on the pooled context itself (no projector), the features the
  probes read.
* ``ema_sigreg``: EMA target plus LeJEPA's SIGReg on the same projector (weight 0.05, LeJEPA's
  lambda, 1024 slices);
* ``lejepa``: LeJEPA-style: the target tokens are the online encoder's on the full image, with
  gradients (``model.target_encoder: none``: no EMA, no stop-gradient), SIGReg (weight 0.05) on the
  projector alone keeping it from collapsing.

It prints a markdown table per recipe (mean +- std over seeds) with the command and the training
seconds, says whether the pretrained ViT beats random init and raw pixels by >= 5 points with all
labels, writes JSON (``--out``), the markdown (``--markdown``) and, with ``--readme README.md``,
replaces the block between ``<!-- quality_images:start -->`` and ``<!-- quality_images:end -->``.

Usage::

    python benchmarks/quality_images.py --threads 2 --seeds 0 1 2 --readme README.md
    python benchmarks/quality_images.py --recipes ema --seeds 0 --epochs 5        # a quick look
    python benchmarks/quality_images.py --seeds 0 1 2 --out q.json --resume       # continue an interrupted one
    python benchmarks/quality_images.py --seeds 0 1 2 --out q.json --resume --saved-only --readme README.md

With ``--out`` the JSON is written after every run; ``--resume`` reuses the runs it holds.

Training seconds depend on the machine and on its load (a shared machine is slower); the CPU
seconds of each command (process, threads and loader workers) are what it costs wherever it runs
(about its wall time on one idle core); the accuracies do not depend on the machine, up to
thread-count rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import environment  # noqa: E402

GAP_TARGET = 5.0  # points, linear probe with all labels: pretrained - max(random init, raw pixels)
FEATURES = (("pretrained", "pretrained ViT"), ("random_init", "same ViT, random init"), ("raw_input", "raw pixels"))
_PROJECTOR = {"projector_hidden_dim": 256, "projector_dim": 256}
_SIGREG = {"regularizer": "sigreg", "regularizer_weight": 0.05, "sigreg": {"num_slices": 1024, "t_max": 3.0, "knots": 17}}
RECIPES: dict[str, dict[str, Any]] = {
    "ema": {"loss": {"regularizer": "none", "var_weight": 0.0, "cov_weight": 0.0}, "model": {"projector_hidden_dim": 0, "projector_dim": 0}},
    "ema_vc": {"loss": {"regularizer": "vc", "var_weight": 1.0, "cov_weight": 1.0}, "model": dict(_PROJECTOR)},
    "ema_vc_pooled": {"loss": {"regularizer": "vc", "var_weight": 1.0, "cov_weight": 1.0}, "model": {"projector_hidden_dim": 0, "projector_dim": 0}},
    "ema_sigreg": {"loss": dict(_SIGREG), "model": {"target_encoder": "ema", **_PROJECTOR}},
    "lejepa": {"loss": dict(_SIGREG), "model": {"target_encoder": "none", **_PROJECTOR}},
}
START, END = "<!-- quality_images:start -->", "<!-- quality_images:end -->"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def recipe_config(name: str, folder: Path) -> Path | None:
    """A YAML file of the ``ijepa`` config with the recipe's overrides (None: they are the shipped
    config's own values, so the run is plain ``jepa train --data DIR``)."""
    from jepa.config import load_config  # noqa: PLC0415

    shipped = load_config("ijepa").to_dict()
    data = _merge(shipped, RECIPES[name])
    if data == shipped:
        return None
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def command(data: Path, out: Path, seed: int, epochs: int, config: Path | None) -> list[str]:
    cmd = ["jepa", "train", "--data", str(data), "--image-size", "32", "--patch-size", "4", "--epochs", str(epochs),
           "--seed", str(seed), "--output-dir", str(out), "--no-progress"]
    return cmd + (["--config", str(config)] if config is not None else [])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], threads: int | None) -> tuple[dict, float, float]:
    """Run one command; returns its metrics.json, wall seconds and CPU seconds (the process and its
    DataLoader workers, all threads): on a machine shared with other jobs the wall time is inflated,
    the CPU time is what the run costs (about its wall time on one idle core)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jepa.cli", *cmd[1:]], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = Path(cmd[cmd.index("--output-dir") + 1])
    return json.loads((out / "metrics.json").read_text()), wall, cpu


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(name: str, runs: list[dict], epochs: int) -> tuple[str, bool]:
    """Markdown for one recipe and whether it meets the target on average."""
    pct = {f: {k: [100 * r["probe"][f][k] for r in runs] for k in ("10_per_class", "all")} for f, _ in FEATURES}
    lines = [f"**{name}** ({len(runs)} seed{'s' if len(runs) > 1 else ''}, {epochs} epochs): linear-probe accuracy (%) on the 300 validation images",
             "", "| features | probe 10/class | probe all |", "|---|---|---|"]
    for key, label in FEATURES:
        lines.append(f"| {label} | {_mean_std(pct[key]['10_per_class'])} | {_mean_std(pct[key]['all'])} |")
    gaps = {}
    for other, label in (("random_init", "random init"), ("raw_input", "raw pixels")):
        g10 = [a - b for a, b in zip(pct["pretrained"]["10_per_class"], pct[other]["10_per_class"])]
        gall = [a - b for a, b in zip(pct["pretrained"]["all"], pct[other]["all"])]
        gaps[other] = statistics.mean(gall)
        lines.append(f"| gap vs {label} | {_mean_std(g10)} | {_mean_std(gall)} |")
    ranks = [r["effective_rank"] for r in runs]
    secs = [r["train_seconds"] for r in runs]
    walls, cpus = [r["wall_seconds"] for r in runs], [r["cpu_seconds"] for r in runs]
    lines += ["", f"Effective rank of the pretrained embeddings {_mean_std(ranks)} of {runs[0]['embedding_dim']}. "
                  f"Per run: training {_mean_std(secs)} s (`train_seconds`), the whole command {_mean_std(walls)} s wall "
                  f"and {_mean_std(cpus)} CPU-seconds (all threads and loader workers)."]
    ok = min(gaps.values()) >= GAP_TARGET
    lines.append(f"- {'YES' if ok else 'NO'}: pretrained beats random init ({gaps['random_init']:+.1f}) and raw pixels "
                 f"({gaps['raw_input']:+.1f}) by >= {GAP_TARGET:g} points with all labels, on average")
    return "\n".join(lines), ok


def replace_block(readme: Path, text: str) -> None:
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{readme}: no {START} ... {END} block to replace")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def _saved_runs(path: Path, epochs: int) -> dict[tuple[str, int], dict]:
    """``{(recipe, seed): metrics}`` of the runs a previous call wrote to ``path`` with ``epochs``."""
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("epochs") != epochs:
        return {}
    return {(name, run["seed"]): run for name, rec in saved.get("recipes", {}).items()
            for run in rec.get("runs", []) if "seed" in run}


def _write_json(path: Path, results: dict[str, Any], done: dict[tuple[str, int], dict]) -> None:
    """``results`` plus the saved runs of recipes this call did not run (kept for a later --resume)."""
    out = json.loads(json.dumps(results))
    for (name, _seed), metrics in done.items():
        rec = out["recipes"].setdefault(name, {"overrides": RECIPES.get(name), "runs": []})
        if not any(r.get("seed") == metrics["seed"] for r in rec["runs"]):
            rec["runs"].append(metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training runs")
    p.add_argument("--data-dir", type=Path, default=None, help="where the PNGs go (default: a temporary folder)")
    p.add_argument("--runs-dir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as markdown here")
    p.add_argument("--readme", type=Path, default=None, help="replace the quality_images block of this file")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs already in --out (same recipe, seed and epochs) instead of training them again")
    p.add_argument("--saved-only", action="store_true",
                   help="with --resume: tables of the saved runs only (a recipe shows the seeds it has), training nothing")
    args = p.parse_args()
    if args.resume and args.out is None:
        p.error("--resume reads the runs of --out: pass --out")
    if args.saved_only and not args.resume:
        p.error("--saved-only needs --resume (and --out)")

    from jepa.data import write_shapes_folder  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="jepa-quality-images-"))
    data = args.data_dir or work / "shapes"
    if not (data / "train").is_dir():
        write_shapes_folder(data, num_train=1200, num_val=300, image_size=32, seed=0)
    runs_dir = args.runs_dir or work / "runs"
    results: dict[str, Any] = {"environment": environment(), "epochs": args.epochs, "recipes": {}}
    done = _saved_runs(args.out, args.epochs) if args.resume else {}
    blocks = []
    all_ok = True
    for name in args.recipes:
        config = recipe_config(name, work)
        runs = []
        seeds = [s for s in args.seeds if (name, s) in done] if args.saved_only else args.seeds
        if not seeds:
            continue
        for seed in seeds:
            metrics = done.get((name, seed))
            if metrics is None:
                cmd = command(data, runs_dir / f"{name}_seed{seed}", seed, args.epochs, config)
                metrics, wall, cpu = run(cmd, args.threads)
                metrics["seed"], metrics["wall_seconds"], metrics["cpu_seconds"] = seed, round(wall, 1), round(cpu, 1)
            wall, cpu = metrics["wall_seconds"], metrics["cpu_seconds"]
            runs.append(metrics)
            if args.out:  # after every run: an interrupted comparison resumes with --resume
                results["recipes"][name] = {"overrides": RECIPES[name], "runs": runs}
                _write_json(args.out, results, done)
            pre, rnd, raw = (100 * metrics["probe"][k]["all"] for k in ("pretrained", "random_init", "raw_input"))
            print(f"{name} seed {seed}: probe all pretrained {pre:.1f} / random init {rnd:.1f} / raw {raw:.1f}; "
                  f"train {metrics['train_seconds']:.0f} s, command wall {wall:.0f} s, CPU {cpu:.0f} s", flush=True)
        text, ok = table(name, runs, args.epochs)
        all_ok &= ok
        shown = " ".join(command(Path("DIR"), Path("runs/shapes"), seeds[0], args.epochs, None)[:10])
        extra = f" --config <ijepa + {json.dumps(RECIPES[name])}>" if config is not None else " (the shipped default)"
        blocks.append(f"{text}\n\nCommand (per seed S): `{shown.replace(f'--seed {seeds[0]}', '--seed S')}{extra}`")
        results["recipes"][name] = {"overrides": RECIPES[name], "runs": runs, "meets_target": ok}
    made_by = (f"`python benchmarks/quality_images.py --recipes {' '.join(args.recipes)} --seeds {' '.join(map(str, args.seeds))}"
               f"{f' --epochs {args.epochs}' if args.epochs != 30 else ''}{f' --threads {args.threads}' if args.threads else ''}"
               f"{f' --out {args.out.name} --resume --saved-only' if args.saved_only else ''}` "
               + (f"made these tables from the runs that calls with --resume and the same --out trained and saved "
                  f"(the per-run wall and CPU seconds are theirs)." if args.saved_only else
                  f"made these tables ({results['environment'].get('cpu_count')} CPUs, load {results['environment'].get('loadavg_1m')})."))
    markdown = made_by + "\n\n" + "\n\n".join(blocks)
    print("\n" + markdown)
    if args.out:
        _write_json(args.out, results, done)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown + "\n")
    if args.readme:
        replace_block(args.readme, markdown)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
