#!/usr/bin/python3
"""Figures and tables of an experiment (`sdpo experiment`), from its index.json and run files.

    /usr/bin/python3 experiments/plot.py experiments/toy/fig3_learning_curves.json [--runs DIR] [--out DIR]
        [--results FILE.csv]
    /usr/bin/python3 experiments/plot.py --all experiments/toy [--results-dir experiments/results]

Reads the experiment manifest's "plots" list, the experiment's index.json (runs, their settings
and folders) and each run's run.h5 (schema version 1, DESIGN.md section 6), and writes one PNG per
"curves" plot and one Markdown file per "table" plot into DIR (default: the experiment's output
folder). Needs only h5py, numpy and matplotlib (Debian: python3-h5py, python3-matplotlib).

--results writes one CSV row per complete run (the experiments/results/<figure>.csv files): run,
variant, seed, reward, learning_rate, epochs, samples (training images), then the final evaluation's
reward_mean and reward_std at every evaluated step count (steps_<n>_mean, steps_<n>_std), all
read from the run file (its resolved manifest attribute and curves).

--all DIR redraws every figure and table in one call: each experiment manifest in DIR (*.json
with "plots") whose runs folder has an index.json with a complete run gets its plots (in its runs
folder) and its results CSV (RESULTS_DIR/<manifest file name>.csv, default experiments/results);
manifests without runs are listed as skipped.

Plot specs (each an object in "plots"):

  {"kind": "curves", "file": "fig3.png", "title": "...",
   "panels": [{"y": "train/reward_last_mean", "title": "8 steps"}, ...],   one panel per entry
   "x": "samples" | "wall_seconds" | "device_seconds" | "reward_queries" | "epoch",
   "group": "variant" | "<a grid key, e.g. dense_reward.name>" | [several of them]}
      One line per group value: the mean over the group's runs (e.g. seeds) with a band of one
      standard deviation. "y" is "train/<metric>" or "eval/steps_<n>/<metric>"; evaluation rows
      are placed at the x of the training epoch they follow (epoch 0: x = 0).

  {"kind": "sweep", "file": "sweep.png", "title": "...", "x": "train.learning_rate",
   "group": "variant", "steps": [1, 8], "metric": "reward_mean", "base": true}
      One panel per step count: the last evaluation's mean (over runs) against the setting "x"
      (read from each run's resolved manifest; log scale), one line per group value, and the
      first evaluation (epoch 0) as a dashed line when "base" is true: a learning-rate sweep.

  {"kind": "table", "file": "table1.md", "title": "...",
   "metric": "reward_mean", "steps": [1, 4, 16, 50], "group": "variant", "base": true}
      One row per group value: the last evaluation's mean (over the group's runs) at each step
      count, plus a "base" row from the first evaluation (epoch 0) when "base" is true.
"""

import argparse
import json
import math
import os
import sys

try:
    import h5py
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:  # pragma: no cover - reported to the user
    sys.exit(f"plot.py: {e}; install Debian's python3-h5py and python3-matplotlib "
             "(scripts/setup.sh does) and run it with /usr/bin/python3")


class PlotError(Exception):
    pass


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise PlotError(f"{path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        raise PlotError(f"{path}: line {e.lineno}: {e.msg}")


def group_value(run, key):
    if isinstance(key, list):  # several keys: one line per combination, e.g. ["variant", "sample.steps"]
        return " / ".join(group_value(run, k) for k in key)
    if key == "variant":
        return run.get("variant") or run["name"]
    settings = run.get("settings", {})
    if key not in settings:
        raise PlotError(f"group '{key}': run '{run['name']}' has no such setting "
                        f"(its settings: {', '.join(settings) or 'none'})")
    value = settings[key]
    return value if isinstance(value, str) else json.dumps(value)


class RunCurves:
    """The curves of one run file."""

    def __init__(self, path):
        self.path = path
        try:
            self.f = h5py.File(path, "r")
        except OSError as e:
            raise PlotError(f"{path}: cannot open run file: {e}")

    def curve(self, name):
        full = "curves/" + name
        if full not in self.f:
            raise PlotError(f"{self.path}: no curve '{name}'")
        return np.asarray(self.f[full][:], dtype=float)

    def xy(self, y, x):
        section, metric = y.rsplit("/", 1)
        values = self.curve(y)
        if section == "train":
            return self.curve("train/" + x), values
        # Evaluation rows sit at the training counter of the epoch they follow.
        epochs = self.curve(section + "/epoch").astype(int)
        if x == "epoch":
            return epochs.astype(float), values
        train_epochs = self.curve("train/epoch").astype(int)
        train_x = dict(zip(train_epochs, self.curve("train/" + x)))
        xs = np.array([0.0 if e == 0 else train_x.get(e, math.nan) for e in epochs])
        return xs, values


def mean_band(series):
    """Mean and std over runs, on the x of the shortest run (runs of one group share x)."""
    n = min(len(xs) for xs, _ in series)
    if n == 0:
        raise PlotError("a run has no rows for this curve")
    xs = series[0][0][:n]
    ys = np.stack([ys[:n] for _, ys in series])
    return xs, ys.mean(axis=0), ys.std(axis=0)


def save_figure(fig, axes, spec, out_dir):
    """Legend on the first panel, the spec's title, then spec["file"] in out_dir; returns its path."""
    axes[0][0].legend(fontsize=8)
    if "title" in spec:
        fig.suptitle(spec["title"], fontsize=11)
    fig.tight_layout()
    path = os.path.join(out_dir, spec["file"])
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(spec, groups, out_dir):
    panels = spec.get("panels") or [{"y": spec["y"]}]
    x = spec.get("x", "samples")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, runs in groups.items():
            xs, mean, std = mean_band([r.xy(panel["y"], x) for r in runs])
            line, = ax.plot(xs, mean, label=label, linewidth=1.6)
            if len(runs) > 1:
                ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(panel.get("title", panel["y"]), fontsize=10)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(panel.get("ylabel", panel["y"].rsplit("/", 1)[1].replace("_", " ")))
        ax.grid(alpha=0.3)
    return save_figure(fig, axes, spec, out_dir)


def plot_table(spec, groups, out_dir):
    metric = spec.get("metric", "reward_mean")
    steps = spec.get("steps", [1, 4, 16, 50])
    header = "| | " + " | ".join(f"{n} step" + ("s" if n != 1 else "") for n in steps) + " |"
    lines = [f"### {spec['title']}", ""] if "title" in spec else []
    lines += [header, "|---" * (len(steps) + 1) + "|"]

    def row(label, pick):
        cells = []
        for n in steps:
            values = [pick(r.curve(f"eval/steps_{n}/{metric}")) for r in runs_of(label)]
            cells.append(f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def runs_of(label):
        return all_runs if label == "base" else groups[label]

    all_runs = [r for runs in groups.values() for r in runs]
    if spec.get("base", False):
        row("base", lambda c: c[0])
    for label in groups:
        row(label, lambda c: c[-1])
    path = os.path.join(out_dir, spec["file"])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def manifest_value(manifest, path, default=None):
    node = manifest
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def write_results(path, complete, runs_dir):
    """One row per run: its settings from the run file's manifest, its final evaluation."""
    rows, step_counts = [], set()
    for r in complete:
        run_file = os.path.join(runs_dir, r.get("folder", r["name"]), "run.h5")
        curves = RunCurves(run_file)
        manifest = json.loads(curves.f.attrs["manifest"])
        reward = manifest_value(manifest, "reward")
        row = {
            "run": r["name"],
            "variant": r.get("variant") or r["name"],
            "seed": manifest_value(manifest, "train.seed", ""),
            "reward": reward if isinstance(reward, str) else manifest_value(manifest, "reward.name", ""),
            "learning_rate": manifest_value(manifest, "train.learning_rate", ""),
            "epochs": int(curves.curve("train/epoch")[-1]) if "curves/train/epoch" in curves.f else 0,
            "samples": int(curves.curve("train/samples")[-1]) if "curves/train/samples" in curves.f else 0,
        }
        if "curves/eval" in curves.f:
            for key in curves.f["curves/eval"]:
                n = int(key.split("_")[1])
                step_counts.add(n)
                row[f"steps_{n}_mean"] = curves.curve(f"eval/{key}/reward_mean")[-1]
                row[f"steps_{n}_std"] = curves.curve(f"eval/{key}/reward_std")[-1]
        rows.append(row)
    columns = ["run", "variant", "seed", "reward", "learning_rate", "epochs", "samples"]
    for n in sorted(step_counts):
        columns += [f"steps_{n}_mean", f"steps_{n}_std"]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            cells = []
            for c in columns:
                v = row.get(c, "")
                cells.append(f"{v:.6g}" if isinstance(v, float) else str(v))
            f.write(",".join(cells) + "\n")
    return path


def plot_sweep(spec, groups, out_dir):
    metric = spec.get("metric", "reward_mean")
    steps = spec.get("steps", [1])
    key = spec["x"]
    fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 3.4), squeeze=False)
    for ax, n in zip(axes[0], steps):
        for label, runs in groups.items():
            points = {}
            for r in runs:
                x = manifest_value(json.loads(r.f.attrs["manifest"]), key)
                if not isinstance(x, (int, float)):
                    raise PlotError(f"{r.path}: its manifest has no number at '{key}'")
                points.setdefault(float(x), []).append(r.curve(f"eval/steps_{n}/{metric}")[-1])
            xs = sorted(points)
            ax.plot(xs, [np.mean(points[x]) for x in xs], marker="o", label=label, linewidth=1.6)
        if spec.get("base", False):
            any_run = next(iter(groups.values()))[0]
            ax.axhline(any_run.curve(f"eval/steps_{n}/{metric}")[0], color="gray", linestyle="--", label="base")
        ax.set_xscale("log")
        ax.set_title(f"{n} step" + ("s" if n != 1 else ""), fontsize=10)
        ax.set_xlabel(key)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    return save_figure(fig, axes, spec, out_dir)


def draw_experiment(path, runs=None, out=None, results=None):
    """Draws one experiment's plots and writes its results CSV; returns the paths written."""
    manifest = load_json(path)
    plots = manifest.get("plots")
    if not plots and not results:
        raise PlotError(f"{path}: no 'plots' list")
    name = manifest.get("name") or os.path.splitext(os.path.basename(path))[0]
    runs_dir = runs or manifest.get("output", {}).get("dir") or os.path.join("runs", name)
    out_dir = out or runs_dir
    index = load_json(os.path.join(runs_dir, "index.json"))
    records = index["runs"] if isinstance(index, dict) else index
    complete = [r for r in records if r.get("state") == "complete"]
    if not complete:
        raise PlotError(f"{runs_dir}/index.json: no complete run to plot")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if results:
        written.append(write_results(results, complete, runs_dir))
    for i, spec in enumerate(plots or []):
        if "file" not in spec or spec.get("kind") not in ("curves", "table", "sweep"):
            raise PlotError(f"{path}: plots[{i}]: needs 'kind' (curves, table or sweep) and 'file'")
        groups = {}
        for r in complete:
            run_file = os.path.join(runs_dir, r.get("folder", r["name"]), "run.h5")
            groups.setdefault(group_value(r, spec.get("group", "variant")), []).append(RunCurves(run_file))
        draw = {"curves": plot_curves, "table": plot_table, "sweep": plot_sweep}[spec["kind"]]
        written.append(draw(spec, groups, out_dir))
    return written


def draw_all(folder, results_dir):
    """--all: every experiment manifest of `folder` that has runs; returns (drawn, skipped)."""
    drawn, skipped = [], []
    for f in sorted(os.listdir(folder)):
        path = os.path.join(folder, f)
        if not f.endswith(".json"):
            continue
        manifest = load_json(path)
        if not isinstance(manifest, dict) or not manifest.get("plots"):
            continue  # a run manifest, or an experiment without figures
        name = manifest.get("name") or os.path.splitext(f)[0]
        runs_dir = manifest.get("output", {}).get("dir") or os.path.join("runs", name)
        if not os.path.exists(os.path.join(runs_dir, "index.json")):
            skipped.append((path, f"no {runs_dir}/index.json"))
            continue
        csv_path = os.path.join(results_dir, os.path.splitext(f)[0] + ".csv")
        try:
            drawn.append((path, draw_experiment(path, results=csv_path)))
        except PlotError as e:
            skipped.append((path, str(e)))
    return drawn, skipped


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiment", nargs="?", help="experiment manifest (JSON) with a 'plots' list")
    p.add_argument("--runs", help="the experiment's output folder (default: its output.dir or runs/<name>)")
    p.add_argument("--out", help="where to write the figures (default: the runs folder)")
    p.add_argument("--results", help="also write one CSV row per complete run to this file")
    p.add_argument("--all", metavar="DIR", help="every experiment manifest in DIR that has runs (see above)")
    p.add_argument("--results-dir", default=os.path.join("experiments", "results"),
                   help="--all: where the results CSVs go (default experiments/results)")
    args = p.parse_args(argv)
    try:
        if args.all:
            if args.experiment or args.runs or args.out or args.results:
                raise PlotError("--all takes a folder of manifests and --results-dir only")
            os.makedirs(args.results_dir, exist_ok=True)
            drawn, skipped = draw_all(args.all, args.results_dir)
            for path, written in drawn:
                for w in written:
                    print(f"{path}: wrote {w}")
            for path, why in skipped:
                print(f"{path}: skipped ({why})")
            print(f"plot.py --all {args.all}: {len(drawn)} experiments drawn, {len(skipped)} skipped")
            if not drawn:
                raise PlotError(f"{args.all}: no experiment manifest with runs")
            return
        if not args.experiment:
            raise PlotError("give an experiment manifest, or --all DIR")
        for w in draw_experiment(args.experiment, args.runs, args.out, args.results):
            print(f"wrote {w}")
    except PlotError as e:
        sys.exit(f"plot.py: {e}")


if __name__ == "__main__":
    main()
