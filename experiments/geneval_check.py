#!/usr/bin/python3
"""The toy GenEval of every run of a toy experiment: does the trained model still draw its prompts?

    /usr/bin/python3 experiments/geneval_check.py EXPERIMENT.json --csv experiments/results/FILE.csv
        [--runs DIR] [--steps 8] [--seeds 2] [--prompts eval] [--tool build/bin/sdpo_toy_geneval]

A reward such as colorfulness is won by colored noise: its curves alone cannot tell a model that
learned from one that stopped drawing shapes. This runs `sdpo_toy_geneval` (rewards/toy_geneval)
on each complete run's last checkpoint (and once on the base model) with the run's own manifest,
and writes one CSV row per run: run, variant, checkpoint, steps, then the strict accuracy per
category and overall, and the soft score. The protocol's collapse check reads the soft score
(experiments/README.md, "The fair protocol").
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys


def last_checkpoint(run_dir):
    folder = os.path.join(run_dir, "checkpoints")
    epochs = [int(m.group(1)) for name in os.listdir(folder) if (m := re.fullmatch(r"epoch_(\d+)", name))]
    if not epochs:
        raise SystemExit(f"{run_dir}: no checkpoints/epoch_<k> folder")
    return os.path.join(folder, f"epoch_{max(epochs)}")


def table_rows(output, steps, where):
    """The tool's Markdown table rows: {steps: [single, counting, position, two_object, overall, soft]};
    a category without prompts in the set (the tool prints "-") is NaN."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():
            rows[int(cells[0])] = [float("nan") if c == "-" else float(c) for c in cells[1:]]
    missing = [s for s in steps if s not in rows]
    if missing:
        raise SystemExit(f"{where}: sdpo_toy_geneval printed no row for steps {missing}:\n{output}")
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment")
    p.add_argument("--csv", required=True)
    p.add_argument("--runs", help="the experiment's output folder (default: its output.dir)")
    p.add_argument("--steps", default="8")
    p.add_argument("--seeds", default="2")
    p.add_argument("--prompts", default="eval", choices=["geneval", "eval", "unseen", "train"])
    p.add_argument("--tool", default="build/bin/sdpo_toy_geneval")
    a = p.parse_args()

    with open(a.experiment) as f:
        experiment = json.load(f)
    runs_dir = a.runs or experiment.get("output", {}).get("dir")
    if not runs_dir:
        raise SystemExit(f"{a.experiment}: no output.dir; give --runs")
    index_file = os.path.join(runs_dir, "index.json")
    if not os.path.isfile(index_file):
        raise SystemExit(f"{index_file}: not found (run `sdpo experiment {a.experiment}` first)")
    with open(index_file) as f:
        index = json.load(f)
    steps = [int(s) for s in a.steps.split(",")]

    def evaluate(run_dir, checkpoint):
        command = [a.tool, os.path.join(run_dir, "manifest.json"), "--checkpoint", checkpoint, "--prompts",
                   a.prompts, "--steps", a.steps, "--seeds", a.seeds]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
        return table_rows(done.stdout, steps, run_dir)

    out = []
    complete = [r for r in index["runs"] if r.get("state") == "complete"]
    if not complete:
        raise SystemExit(f"{index_file}: no complete run")
    first = os.path.join(runs_dir, complete[0]["folder"])
    for name, variant, run_dir, checkpoint in [("base", "base", first, "base")] + [
            (r["name"], r.get("variant", ""), os.path.join(runs_dir, r["folder"]), None) for r in complete]:
        checkpoint = checkpoint or last_checkpoint(run_dir)
        rows = evaluate(run_dir, checkpoint)
        for s in steps:
            out.append([name, variant, os.path.basename(checkpoint), s] + rows[s])
        print(f"{name}: " + ", ".join(f"{s} steps overall {rows[s][4]:.3f} soft {rows[s][5]:.3f}" for s in steps),
              file=sys.stderr)

    os.makedirs(os.path.dirname(a.csv) or ".", exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "variant", "checkpoint", "steps", "single_object", "counting", "position", "two_object",
                    "overall", "soft"])
        w.writerows(out)
    print(f"wrote {a.csv}", file=sys.stderr)


if __name__ == "__main__":
    main()
