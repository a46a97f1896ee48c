"""Representation quality of the default ``jepa train`` recipe, over several seeds.

For every seed it trains the config (the shipped default unless ``--config``), then evaluates
three feature sets on the fixed digits train/test split:

* ``pretrained``  - the trained encoder's pooled embeddings,
* ``random_init`` - the same architecture at random init with the same seed (as ``jepa train``),
* ``raw_input``   - the raw 8x8 pixels,

each with a linear probe (logistic regression on standardized features, ``jepa.trainer.eval``;
identical to the probe ``jepa train`` prints) and a cosine kNN (k=20 on L2-normalized features),
both with 10 labels per class and with all labels. It prints a markdown table of mean +- std over
seeds (plus the effective rank of the pretrained test embeddings and the training seconds), says
whether the pretrained encoder beats random init by >= 10 points at 10 labels/class on average and
whether it beats the raw pixels, and writes the per-seed and summary numbers as JSON.

With ``--recipes`` it does the same for several configs (shipped names or YAML paths, optionally
``label=config``) and adds one table: recipe x {probe 10/class, probe all, kNN 10/class, effective
rank, train time}, with the random-init and raw-pixel references.

Usage::

    python benchmarks/quality.py                       # default config, seeds 0 1 2
    python benchmarks/quality.py --recipes default ijepa_sigreg lejepa "I-JEPA (EMA)=ijepa_ema.yaml"
    python benchmarks/quality.py --quick               # 1 seed, 5 epochs (smoke run)
    python benchmarks/quality.py --config my.yaml --epochs 150 --seeds 0 1 2 3 \
        --out bench-results/quality.json --markdown bench-results/quality.md
    python benchmarks/quality.py --set training.learning_rate=2e-3 --set loss.cov_weight=2

On a machine shared with other torch processes pass ``--threads 1``: oversubscribed OpenMP threads
thrash (on 2 busy cores a 100-epoch run went from ~60 s to tens of minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import environment  # noqa: E402

from jepa.config import load_config  # noqa: E402
from jepa.trainer.modes import evaluating  # noqa: E402

GAP_TARGET = 10.0  # points: pretrained - random init, linear probe, 10 labels/class, mean over seeds
RAW_GAP_TARGET = 4.0  # points: pretrained - raw pixels, linear probe, 10 labels/class, mean over seeds
LABELS_PER_CLASS = 10
KNN_K = 20
FEATURES = ("pretrained", "random_init", "raw_input")
FEATURE_LABELS = {"pretrained": "pretrained encoder", "random_init": "same arch, random init", "raw_input": "raw pixels"}


def knn_accuracy(train_x: Any, train_y: Any, test_x: Any, test_y: Any, labels_per_class: int | None, seed: int, k: int = KNN_K) -> float:
    """Cosine kNN accuracy on L2-normalized features (the same label subset as the linear probe)."""
    from sklearn.neighbors import KNeighborsClassifier  # noqa: PLC0415

    from jepa.trainer.eval import sample_per_class  # noqa: PLC0415

    def arr(t: Any) -> np.ndarray:
        return np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t)

    train_x, train_y, test_x, test_y = (arr(t) for t in (train_x, train_y, test_x, test_y))
    train_x = train_x.reshape(len(train_x), -1).astype(np.float64)
    test_x = test_x.reshape(len(test_x), -1).astype(np.float64)
    train_x /= np.maximum(np.linalg.norm(train_x, axis=1, keepdims=True), 1e-12)
    test_x /= np.maximum(np.linalg.norm(test_x, axis=1, keepdims=True), 1e-12)
    idx = sample_per_class(train_y, labels_per_class, seed)
    clf = KNeighborsClassifier(n_neighbors=min(k, len(idx)), metric="cosine")
    clf.fit(train_x[idx], train_y[idx])
    return float((clf.predict(test_x) == test_y).mean())


def _parse_value(text: str) -> Any:
    for cast in (int, float):  # YAML 1.1 reads "2e-3" as a string
        try:
            return cast(text)
        except ValueError:
            pass
    import yaml  # noqa: PLC0415

    return yaml.safe_load(text)


def apply_overrides(config: Any, overrides: list[str]) -> None:
    """``section.key=value`` (YAML value) overrides, e.g. ``training.learning_rate=2e-3``."""
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--set: expected section.key=value, got {item!r}")
        dotted, value = item.split("=", 1)
        *path, key = dotted.strip().split(".")
        target = config
        for part in path:
            target = getattr(target, part) if not isinstance(target, dict) else target[part]
        if isinstance(target, dict):
            target[key] = _parse_value(value)
        else:
            if not hasattr(target, key):
                raise SystemExit(f"--set: unknown config key {dotted!r}")
            setattr(target, key, _parse_value(value))


def run_seed(args: argparse.Namespace, seed: int, workdir: Path, config_name: str | None = None) -> dict[str, Any]:
    """Train one seed as ``jepa train`` does and evaluate probes + kNN."""
    from jepa.data import load_digits_split  # noqa: PLC0415
    from jepa.trainer.experiment import build_probe_run, train_and_probe  # noqa: PLC0415

    config = load_config(config_name or args.config)
    apply_overrides(config, args.set)
    t = config.training
    if args.epochs is not None:
        t.epochs = args.epochs
    t.seed = seed
    config.logging.output_dir = str(workdir / f"seed{seed}")
    config.logging.progress_bar = False
    config.logging.loggers = []

    trainer, random_init = build_probe_run(config)
    model = trainer.model
    start = time.perf_counter()
    result = train_and_probe(trainer, random_init, labels_per_class=LABELS_PER_CLASS)
    report, train_seconds = result["report"], result["train_seconds"]
    eval_start = start + train_seconds  # the probes ran right after training
    tr = load_digits_split("train", patch=config.data.patch_size, seed=config.data.split_seed)
    te = load_digits_split("test", patch=config.data.patch_size, seed=config.data.split_seed)

    feats: dict[str, tuple[Any, Any]] = {}
    for name, m in (("pretrained", model), ("random_init", random_init)):
        device = next(m.parameters()).device
        with evaluating(m):
            feats[name] = (m.embed(tr.tokens.to(device)).cpu(), m.embed(te.tokens.to(device)).cpu())
    feats["raw_input"] = (tr.images.reshape(len(tr.images), -1), te.images.reshape(len(te.images), -1))
    key = f"{LABELS_PER_CLASS}_per_class"
    knn = {
        name: {
            key: knn_accuracy(ztr, tr.labels, zte, te.labels, LABELS_PER_CLASS, t.seed),
            "all": knn_accuracy(ztr, tr.labels, zte, te.labels, None, t.seed),
        }
        for name, (ztr, zte) in feats.items()
    }
    return {
        "seed": seed,
        "epochs": t.epochs,
        "recipe": report.get("recipe", {}),
        "monitors": report.get("monitors", {}),
        "probe_cost": report.get("probe_cost", {}),
        "probe": report["probe"],
        "knn": knn,
        "effective_rank": report["effective_rank"],
        "embedding_dim": report["embedding_dim"],
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(time.perf_counter() - eval_start, 2),
    }


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    key = f"{LABELS_PER_CLASS}_per_class"
    out: dict[str, Any] = {}
    for metric in ("probe", "knn"):
        out[metric] = {f: {s: _mean_std([100 * r[metric][f][s] for r in runs]) for s in (key, "all")} for f in FEATURES}
    out["gap_vs_random_init"] = {
        m: {s: _mean_std([100 * (r[m]["pretrained"][s] - r[m]["random_init"][s]) for r in runs]) for s in (key, "all")} for m in ("probe", "knn")
    }
    out["gap_vs_raw_input"] = {
        m: {s: _mean_std([100 * (r[m]["pretrained"][s] - r[m]["raw_input"][s]) for r in runs]) for s in (key, "all")} for m in ("probe", "knn")
    }
    out["effective_rank"] = _mean_std([r["effective_rank"] for r in runs])
    out["embedding_dim"] = runs[0]["embedding_dim"]
    out["train_seconds"] = _mean_std([r["train_seconds"] for r in runs])
    out["total_seconds_per_seed"] = _mean_std([r["train_seconds"] + r["eval_seconds"] for r in runs])
    costs = [r["probe_cost"] for r in runs if r.get("probe_cost")]
    if costs:  # the online probe's seconds per validation, as a share of an epoch
        out["probe_percent_of_epoch"] = _mean_std([100 * c["fraction_of_epoch"] for c in costs])
    return out


def _pm(d: dict[str, float]) -> str:
    return f"{d['mean']:.1f} ± {d['std']:.1f}"


def markdown(summary: dict[str, Any], runs: list[dict[str, Any]], title: str, command: str | None = None) -> str:
    key = f"{LABELS_PER_CLASS}_per_class"
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [
        f"### {title}",
        "",
        *([f"Made by `{command}`.", ""] if command else []),
        f"Accuracy (%) on the digits test split, mean ± std over seeds {seeds} ({runs[0]['epochs']} epochs).",
        "",
        f"| features | probe {LABELS_PER_CLASS}/class | probe all | kNN {LABELS_PER_CLASS}/class | kNN all |",
        "|---|---|---|---|---|",
    ]
    for f in FEATURES:
        p, k = summary["probe"][f], summary["knn"][f]
        lines.append(f"| {FEATURE_LABELS[f]} | {_pm(p[key])} | {_pm(p['all'])} | {_pm(k[key])} | {_pm(k['all'])} |")
    gr, gx = summary["gap_vs_random_init"], summary["gap_vs_raw_input"]
    lines.append(f"| gap vs random init | {_pm(gr['probe'][key])} | {_pm(gr['probe']['all'])} | {_pm(gr['knn'][key])} | {_pm(gr['knn']['all'])} |")
    lines.append(f"| gap vs raw pixels | {_pm(gx['probe'][key])} | {_pm(gx['probe']['all'])} | {_pm(gx['knn'][key])} | {_pm(gx['knn']['all'])} |")
    lines += [
        "",
        f"Effective rank of the pretrained test embeddings: {_pm(summary['effective_rank'])} of {summary['embedding_dim']}; "
        f"training {_pm(summary['train_seconds'])} s per seed ({_pm(summary['total_seconds_per_seed'])} s with the probes)"
        + (f"; the online probe took {_pm(summary['probe_percent_of_epoch'])}% of an epoch." if "probe_percent_of_epoch" in summary else "."),
        "",
        "| seed | probe pre 10/class | probe rand 10/class | gap | probe raw 10/class | probe pre all | kNN pre 10/class | erank | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        p = r["probe"]
        lines.append(
            f"| {r['seed']} | {100 * p['pretrained'][key]:.1f} | {100 * p['random_init'][key]:.1f} | "
            f"{100 * (p['pretrained'][key] - p['random_init'][key]):+.1f} | {100 * p['raw_input'][key]:.1f} | "
            f"{100 * p['pretrained']['all']:.1f} | {100 * r['knn']['pretrained'][key]:.1f} | {r['effective_rank']:.1f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    key = f"{LABELS_PER_CLASS}_per_class"
    gap_rand = summary["gap_vs_random_init"]["probe"][key]["mean"]
    gap_raw = summary["gap_vs_raw_input"]["probe"][key]["mean"]
    gap_raw_all = summary["gap_vs_raw_input"]["probe"]["all"]["mean"]
    gap_knn = summary["gap_vs_raw_input"]["knn"][key]["mean"]
    return [
        {
            "target": f"pretrained beats raw pixels by >= {RAW_GAP_TARGET:g} points at {LABELS_PER_CLASS} labels/class on average (linear probe)",
            "value": gap_raw,
            "limit": RAW_GAP_TARGET,
            "met": gap_raw >= RAW_GAP_TARGET,
        },
        {
            "target": f"pretrained beats raw pixels at {LABELS_PER_CLASS} labels/class on average (kNN)",
            "value": gap_knn,
            "limit": 0.0,
            "met": gap_knn > 0.0,
        },
        {
            "target": f"pretrained beats random init by >= {GAP_TARGET:g} points at {LABELS_PER_CLASS} labels/class on average (linear probe)",
            "value": gap_rand,
            "limit": GAP_TARGET,
            "met": gap_rand >= GAP_TARGET,
        },
        {
            "target": "pretrained beats raw pixels with all labels on average (linear probe)",
            "value": gap_raw_all,
            "limit": 0.0,
            "met": gap_raw_all > 0.0,
        },
    ]


def recipe_table(results: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    """Markdown: recipe x {probe 10/class, probe all, kNN 10/class, effective rank, train time}, plus the
    random-init and raw-pixel rows (from the first recipe: the same data and seeds)."""
    key = f"{LABELS_PER_CLASS}_per_class"
    first = next(iter(results.values()))["summary"]
    lines = [
        f"Accuracy (%) on the digits test split, mean ± std over seeds {', '.join(map(str, seeds))}; effective rank of the "
        f"pretrained test embeddings (of {first['embedding_dim']}); training seconds per seed.",
        "",
        f"| recipe | probe {LABELS_PER_CLASS}/class | probe all | kNN {LABELS_PER_CLASS}/class | effective rank | train s |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        s = r["summary"]
        name = r["runs"][0].get("recipe", {}).get("name")
        title = f"{label} ({name})" if name and name != label else label
        lines.append(f"| {title} | {_pm(s['probe']['pretrained'][key])} | {_pm(s['probe']['pretrained']['all'])} | "
                     f"{_pm(s['knn']['pretrained'][key])} | {_pm(s['effective_rank'])} | {_pm(s['train_seconds'])} |")
    for f in ("random_init", "raw_input"):
        lines.append(f"| {FEATURE_LABELS[f]} | {_pm(first['probe'][f][key])} | {_pm(first['probe'][f]['all'])} | {_pm(first['knn'][f][key])} | | |")
    return "\n".join(lines) + "\n"


def _recipes(items: list[str]) -> dict[str, str]:
    """``label=config`` or ``config`` (labelled by its name) -> {label: config}."""
    out = {}
    for item in items:
        label, _, config = item.rpartition("=")
        out[label or Path(config).stem] = config
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default", help="YAML config file or shipped config name (default: 'default')")
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override (repeatable), e.g. loss.cov_weight=2")
    p.add_argument("--out", type=Path, default=Path("bench-results/quality.json"), help="JSON results (default: bench-results/quality.json)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown table here")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 5 epochs")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the >= 4-point gap over raw pixels (10 labels/class) is missed")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) first")
    p.add_argument("--recipes", nargs="+", default=None, metavar="[LABEL=]CONFIG",
                   help="compare several configs (shipped names or YAML paths) in one recipe table")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.epochs = 5
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.recipes:
        return _main_recipes(args, argv)
    env = environment()
    runs = []
    wall0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jepa-quality-") as tmp:
        for seed in args.seeds:
            r = run_seed(args, seed, Path(tmp))
            key = f"{LABELS_PER_CLASS}_per_class"
            pr = r["probe"]
            print(
                f"seed {seed}: probe 10/class pre {100 * pr['pretrained'][key]:.1f} rand {100 * pr['random_init'][key]:.1f} "
                f"raw {100 * pr['raw_input'][key]:.1f} | all pre {100 * pr['pretrained']['all']:.1f} | "
                f"kNN 10/class pre {100 * r['knn']['pretrained'][key]:.1f} | erank {r['effective_rank']:.1f} | "
                f"train {r['train_seconds']:.1f}s eval {r['eval_seconds']:.1f}s",
                flush=True,
            )
            runs.append(r)
    summary = summarize(runs)
    title = f"JEPA representation quality: config {args.config}" + (f", overrides {' '.join(args.set)}" if args.set else "")
    command = " ".join(["python benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])])
    md = markdown(summary, runs, title, command)
    targets = verdicts(summary)
    print()
    print(md)
    for t in targets:
        print(f"{'YES' if t['met'] else 'NO '}: {t['target']}: {t['value']:+.1f} points (need {'>=' if t['limit'] else '>'} {t['limit']:g})")
    env["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    result = {
        "benchmark": "quality",
        "config": args.config,
        "overrides": args.set,
        "epochs": runs[0]["epochs"],
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
        "targets": targets,
        "environment": env,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md + "\n" + "\n".join(f"- {'YES' if t['met'] else 'NO'}: {t['target']} ({t['value']:+.1f} points)" for t in targets) + "\n")
        print(f"wrote {args.markdown}")
    return 1 if args.strict and not targets[0]["met"] else 0


def _main_recipes(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--recipes``: every recipe over every seed, the recipe table, per-recipe tables and targets."""
    env = environment()
    recipes = _recipes(args.recipes)
    results: dict[str, dict[str, Any]] = {}
    wall0 = time.perf_counter()
    key = f"{LABELS_PER_CLASS}_per_class"
    with tempfile.TemporaryDirectory(prefix="jepa-quality-") as tmp:
        for label, config in recipes.items():
            runs = []
            for seed in args.seeds:
                r = run_seed(args, seed, Path(tmp) / label, config)
                print(f"{label} seed {seed}: probe 10/class {100 * r['probe']['pretrained'][key]:.1f} (raw {100 * r['probe']['raw_input'][key]:.1f}) | "
                      f"all {100 * r['probe']['pretrained']['all']:.1f} | kNN 10/class {100 * r['knn']['pretrained'][key]:.1f} "
                      f"(raw {100 * r['knn']['raw_input'][key]:.1f}) | erank {r['effective_rank']:.1f} | train {r['train_seconds']:.1f}s", flush=True)
                runs.append(r)
            summary = summarize(runs)
            results[label] = {"config": config, "runs": runs, "summary": summary, "targets": verdicts(summary)}
    command = " ".join(["python benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])])
    md = f"### Recipes\n\nMade by `{command}`.\n\n" + recipe_table(results, args.seeds)
    for label, r in results.items():
        md += "\n" + "\n".join(f"- {label}: {'YES' if t['met'] else 'NO'}: {t['target']} ({t['value']:+.1f} points)" for t in r["targets"])
    md += "\n"
    for label, r in results.items():
        md += "\n" + markdown(r["summary"], r["runs"], f"{label} ({recipes[label]})")
    print()
    print(md)
    env["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    out = {"benchmark": "quality", "recipes": results, "seeds": args.seeds, "overrides": args.set, "environment": env,
           "args": {k: str(v) for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
        print(f"wrote {args.markdown}")
    return 1 if args.strict and not all(r["targets"][0]["met"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
