#!/usr/bin/python3
"""The fair protocol's learning-rate selection (experiments/README.md) from a sweep's results CSV.

    /usr/bin/python3 experiments/select_rate.py experiments/results/sweep_lr_colorfulness.csv \\
        [--guard experiments/results/sweep_lr_colorfulness_geneval.csv] [--steps 8]

Per variant: among the runs with a finite final evaluation reward at the training length (--steps),
and, with --guard (a CSV of experiments/geneval_check.py), whose toy GenEval soft score there is at
least 90% of the base model's, the rate with the highest reward; where another such rate is within
1% of it, the smallest of them. Prints one line per variant and the rates as JSON.
"""

import argparse
import csv
import json
import math

GUARD_FRACTION = 0.9  # the collapse check: soft toy GenEval >= 90% of the base's
WITHIN = 0.01         # rates within 1% of the best: the smallest is chosen


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--guard")
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()

    with open(a.results) as f:
        rows = list(csv.DictReader(f))
    column = f"steps_{a.steps}_mean"
    if not rows or column not in rows[0]:
        raise SystemExit(f"{a.results}: no column {column}")
    soft = {}
    floor = None
    if a.guard:
        with open(a.guard) as f:
            guard = [r for r in csv.DictReader(f) if int(r["steps"]) == a.steps]
        soft = {r["run"]: float(r["soft"]) for r in guard}
        if "base" not in soft:
            raise SystemExit(f"{a.guard}: no base row at {a.steps} steps")
        floor = GUARD_FRACTION * soft["base"]

    selected = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        candidates = []
        for r in rows:
            if r["variant"] != variant:
                continue
            value = float(r[column])
            if not math.isfinite(value):
                continue
            if floor is not None:
                if r["run"] not in soft:
                    raise SystemExit(f"{a.guard}: no row for run {r['run']}")
                if soft[r["run"]] < floor - 1e-9:  # "at least 90%": 0.72 passes 0.9 x 0.80 (0.72000000000000008)
                    continue
            candidates.append((float(r["learning_rate"]), value))
        if not candidates:
            print(f"{variant}: no run qualifies")
            continue
        best = max(v for _, v in candidates)
        rate = min(lr for lr, v in candidates if v >= best - WITHIN * abs(best))
        selected[variant] = rate
        kept = ", ".join(f"{lr:g}" for lr, _ in sorted(candidates))
        print(f"{variant}: best {best:.4g}; qualifying rates {kept}; selected {rate:g}")
    if floor is not None:
        print(f"collapse check: soft toy GenEval >= {floor:.4f} ({GUARD_FRACTION:g} x base {soft['base']:.4f})")
    print(json.dumps(selected))


if __name__ == "__main__":
    main()
