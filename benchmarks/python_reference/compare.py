#!/usr/bin/python3
"""Times the framework (`sdpo bench`) against the Python peer (peer.py) on one model.

1. --model toy_policy (default): builds the TorchScript policy with toy_policy.py (fixed seed: the
   same file each time); the framework runs it through its `torchscript` plugin, the peer through
   torch.jit.load. --model toy_unet: the framework's own C++ `toy_unet` on the shipped checkpoint
   experiments/assets/toy_unet.safetensors, the peer the eager PyTorch module of toy_unet.py
   loaded from the same file.
2. Writes a framework manifest derived from experiments/toy/quickstart.json (sdpo) or
   experiments/toy/ddpo.json (ddpo): that model (epsilon, 3x32x32), text encoder `toy_text` with
   dim 64, max_words 12, layers 0 and no checkpoint, and the epoch shape given here (T, pairs or
   trajectories per batch, batches, train batch, accumulation). The trajectory arrays are not
   written to run.h5 (the reference scripts keep none either).
3. For each of --rounds rounds, runs `sdpo bench MANIFEST --epochs N --threads K` and
   `peer.py ... --epochs N --warmup 1 --threads K` with the same shape, hyperparameters and seed,
   both with OPENBLAS_NUM_THREADS=1; the order alternates between rounds so that a drift of the
   machine's load does not favour one side.
4. Prints per round the seconds per timed epoch (sampling, update, total) of both and the ratio
   peer / framework, then the median and min-max of the ratios.

Phases: the framework's "sampling" (prompts, text encoding, noise, the sampler loop) and
"update" (algorithm.update: recomputed log-probs, loss, backward, optimizer) from sdpo bench's
table; the peer's sampling_s (its pipeline calls, with the text encoding) and training_s (the
training loop). "total" is the epoch's wall time on both sides (rewards, advantages, logging
included).

Usage: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 benchmarks/python_reference/compare.py \
           --algorithm sdpo --rounds 3 --epochs 2 [--model toy_unet]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PY = sys.executable  # the interpreter running this script (Debian's /usr/bin/python3, with torch)
TOY_UNET_CHECKPOINT = os.path.join(ROOT, "experiments", "assets", "toy_unet.safetensors")

# The epoch shape of issue 17's measurement: T = 20, 8 pairs, training batch 2, accumulation 2 for
# SDPO; DDPO with the paper's fair-comparison rule (App. A: the paired methods halve DDPO's
# sampling batches and accumulation), i.e. 2 batches of 8 single trajectories (the same 16 images
# as SDPO's 8 pairs) and accumulation 4 (times T).
DEFAULTS = {
    "sdpo": {"steps": 20, "pairs": 8, "batches": 1, "train_batch": 2, "accumulation": 2},
    "ddpo": {"steps": 20, "pairs": 8, "batches": 2, "train_batch": 2, "accumulation": 4},
}


def write_manifest(algorithm, model_file, shape, path, model_config=None, model="toy_policy", forward_batch=0):
    base = os.path.join(ROOT, "experiments", "toy", "quickstart.json" if algorithm == "sdpo" else "ddpo.json")
    with open(base) as f:
        m = json.load(f)
    m["name"] = f"python_peer_compare_{algorithm}"
    on = "the TorchScript toy policy" if model == "toy_policy" else "the C++ toy_unet on the shipped checkpoint"
    m["description"] = (f"benchmarks/python_reference/compare.py: {os.path.basename(base)} on {on}, "
                        f"epoch shape {shape}, against the Python peer")
    if model_config:
        # A toy_unet variant instead of the TorchScript file (then the peer has no same model: the
        # comparison is framework-only).
        with open(model_config) as f:
            m["model"] = json.load(f)
    elif model == "toy_unet":
        m["model"] = {"name": "toy_unet", "options": {"checkpoint": TOY_UNET_CHECKPOINT}}
    else:
        m["model"] = {"name": "torchscript",
                      "options": {"file": model_file, "prediction_type": "epsilon", "latent_shape": [3, 32, 32]}}
    m["text_encoder"] = {"name": "toy_text", "options": {"dim": 64, "max_words": 12, "layers": 0}}
    m["sample"]["steps"] = shape["steps"]
    t = m["train"]
    t["batch_size"] = shape["pairs"]
    t["batches_per_epoch"] = shape["batches"]
    t["train_batch_size"] = shape["train_batch"]
    t["gradient_accumulation"] = shape["accumulation"]
    m.setdefault("output", {})["save_trajectories"] = False
    if forward_batch:
        m["sample"]["forward_batch"] = forward_batch  # sampling's model calls in chunks of this many latents
    with open(path, "w") as f:
        json.dump(m, f, indent=2)
    return m


def peer_args(m, algorithm, model_file, shape, epochs, threads):
    """peer.py's command line with the manifest's hyperparameters."""
    alg = m["algorithm"]["options"]
    norm = m["normalizer"]["options"]
    t = m["train"]
    args = [PY, os.path.join(HERE, "peer.py"), "--algorithm", algorithm, "--model", model_file,
            "--epochs", str(epochs), "--warmup", "1", "--threads", str(threads),
            "--steps", str(shape["steps"]), "--pairs", str(shape["pairs"]), "--batches", str(shape["batches"]),
            "--train-batch", str(shape["train_batch"]), "--accumulation", str(shape["accumulation"]),
            "--lr", str(t["learning_rate"]), "--weight-decay", str(t.get("weight_decay", 1e-4)),
            "--max-grad-norm", str(t.get("max_grad_norm", 1.0)), "--seed", str(t.get("seed", 42)),
            "--clip-range", str(alg.get("clip_range", 1e-4)), "--adv-clip-max", str(alg.get("adv_clip_max", 5)),
            "--eta", str(m["sampler"]["options"].get("eta", 1.0)),
            "--buffer-size", str(norm.get("buffer_size", 32)), "--min-count", str(norm.get("min_count", 16))]
    if algorithm == "sdpo":
        args += ["--gamma", str(alg.get("gamma", 0.99)), "--lam", str(alg.get("lambda", 0.99)),
                 "--log-scale", str(alg.get("eta", 1.0))]
    return args


def run(cmd, env):
    p = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout)
        raise SystemExit(f"compare.py: command failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout


def run_framework(binary, manifest, epochs, threads, env):
    out = run([binary, "bench", manifest, "--epochs", str(epochs), "--threads", str(threads)], env)

    def phase(name):
        mt = re.search(r"^\s+" + re.escape(name) + r"\s+([0-9.]+)\s", out, re.M)
        if not mt:
            sys.stderr.write(out)
            raise SystemExit(f"compare.py: no '{name}' row in the sdpo bench output")
        return float(mt.group(1)) / epochs  # sdpo bench sums the timed epochs

    calls = re.search(r"^model calls: .*$", out, re.M)
    res = {"sampling": phase("sampling"), "update": phase("update"), "total": phase("epoch total"),
           "calls": calls.group(0) if calls else "?"}
    # The bare libtorch loop (the framework's model calls alone), split into the no-grad
    # (sampling) and grad (update) calls where this build of sdpo bench prints the split.
    bare = re.search(r"^bare libtorch loop[^:]*: ([0-9.]+) s(?: \(no-grad forwards ([0-9.]+) s, grad forwards "
                     r"and backwards ([0-9.]+) s\))?", out, re.M)
    if bare:
        res["bare"] = float(bare.group(1)) / epochs
        if bare.group(2):
            res["bare_no_grad"], res["bare_grad"] = float(bare.group(2)) / epochs, float(bare.group(3)) / epochs
    return res


def run_peer(args, env):
    rows = [json.loads(line) for line in run(args, env).splitlines() if line.startswith("{")]
    timed = [r for r in rows if not r["warmup"]]
    n = len(timed)
    calls = timed[0]
    return {"sampling": sum(r["sampling_s"] for r in timed) / n, "update": sum(r["training_s"] for r in timed) / n,
            "total": sum(r["wall_s"] for r in timed) / n,
            "calls": (f"per epoch {calls['no_grad_forwards']} no-grad forwards, {calls['grad_forwards']} grad "
                      f"forwards, {calls['backwards']} backwards, {calls['updates']} optimizer updates")}


def spread(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithm", choices=["sdpo", "ddpo"], default="sdpo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per run (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of both sides")
    ap.add_argument("--sdpo", default=os.path.join(ROOT, "build", "bin", "sdpo"), help="the sdpo binary")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--pairs", "--batch", dest="pairs", type=int,
                    help="pairs (sdpo) or trajectories (ddpo) per sampling batch")
    ap.add_argument("--batches", type=int, help="sampling batches per epoch")
    ap.add_argument("--train-batch", type=int)
    ap.add_argument("--accumulation", type=int)
    ap.add_argument("--model", choices=["toy_policy", "toy_unet"], default="toy_policy",
                    help="toy_policy: the TorchScript file of toy_policy.py on both sides; toy_unet: the framework's "
                         "C++ toy_unet and the peer's eager module of toy_unet.py, on the shipped checkpoint")
    ap.add_argument("--model-config", help="JSON of a framework model component (e.g. a toy_unet variant): "
                                          "times only the framework with it; the peer has no same model")
    ap.add_argument("--forward-batch", type=int, default=0,
                    help="the framework's sample.forward_batch (0: its default, one model call per step)")
    ap.add_argument("--workdir", help="where the model file and manifest go (default: a temporary folder)")
    a = ap.parse_args()

    if not os.path.exists(a.sdpo):
        raise SystemExit(f"compare.py: {a.sdpo} does not exist (build the framework first)")
    shape = dict(DEFAULTS[a.algorithm])
    for k in shape:
        if getattr(a, k) is not None:
            shape[k] = getattr(a, k)
    work = a.workdir or tempfile.mkdtemp(prefix="sdpo_python_peer_")
    os.makedirs(work, exist_ok=True)
    model_file = os.path.join(work, "toy_policy.pt") if a.model == "toy_policy" else "toy_unet:" + TOY_UNET_CHECKPOINT
    manifest = os.path.join(work, f"manifest_{a.algorithm}.json")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("SDPO_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)  # both sides get --threads explicitly
    if a.model == "toy_policy":
        print(run([PY, os.path.join(HERE, "toy_policy.py"), model_file], env).strip())
    else:
        print(f"toy_unet: {os.path.relpath(TOY_UNET_CHECKPOINT, ROOT)}; framework plugin toy_unet, peer the eager "
              f"module of toy_unet.py")
    m = write_manifest(a.algorithm, model_file, shape, manifest, a.model_config, a.model, a.forward_batch)
    n_traj = shape["pairs"] * shape["batches"] * (2 if a.algorithm == "sdpo" else 1)
    print(f"{a.algorithm}: T = {shape['steps']}, {shape['pairs']} {'pairs' if a.algorithm == 'sdpo' else 'trajectories'}"
          f" x {shape['batches']} batch(es) ({n_traj} trajectories), train batch {shape['train_batch']}, "
          f"accumulation {shape['accumulation']}; {a.epochs} timed epoch(s) after 1 warm-up, {a.threads} intra-op "
          f"threads, OPENBLAS_NUM_THREADS=1; manifest {manifest}")
    pargs = peer_args(m, a.algorithm, model_file, shape, a.epochs, a.threads)

    results = []
    for r in range(a.rounds):
        order = ["framework", "peer"] if r % 2 == 0 else ["peer", "framework"]
        res = {}
        for side in order:
            res[side] = (run_framework(a.sdpo, manifest, a.epochs, a.threads, env) if side == "framework"
                         else run_peer(pargs, env) if not a.model_config else None)
        results.append(res)
        if r == 0:
            print(f"framework model calls ({a.epochs} timed epochs): {res['framework']['calls']}")
            if res.get("peer"):
                print(f"peer model calls: {res['peer']['calls']}")
            print()
            print("round  framework s/epoch (sampling, update, total)   peer s/epoch (sampling, update, total)"
                  "   peer/framework (sampling, update, total)")
        f, p = res["framework"], res.get("peer")
        line = f"{r + 1:5d}  {f['sampling']:8.3f} {f['update']:8.3f} {f['total']:8.3f}              "
        if p:
            line += (f"{p['sampling']:8.3f} {p['update']:8.3f} {p['total']:8.3f}        "
                     f"{p['sampling'] / f['sampling']:6.2f} {p['update'] / f['update']:6.2f} "
                     f"{p['total'] / f['total']:6.2f}")
        print(line, flush=True)

    if a.model_config:
        return 0
    print()
    for key, label in (("sampling", "sampling"), ("update", "update"), ("total", "epoch total")):
        fw = [x["framework"][key] for x in results]
        pe = [x["peer"][key] for x in results]
        ratios = [p / f for p, f in zip(pe, fw)]
        print(f"{label:12s} framework {spread(fw)} s, peer {spread(pe)} s; "
              f"ratio peer/framework median {spread(ratios)}")
    if all("bare_no_grad" in x["framework"] for x in results):
        # What the framework's own model calls cost without anything around them: the floor of its
        # sampling and update phases on this model and batch layout.
        print(f"framework bare loop per epoch: no-grad forwards {spread([x['framework']['bare_no_grad'] for x in results])}"
              f" s, grad forwards and backwards {spread([x['framework']['bare_grad'] for x in results])} s")
    elif all("bare" in x["framework"] for x in results):
        print(f"framework bare loop per epoch (all its model calls): {spread([x['framework']['bare'] for x in results])} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
