#!/usr/bin/python3
"""Checks the Python peer's math against the golden SDPO reference vectors.

The peer (peer.py) is only a fair speed reference if it does the same math as the framework, so
its pieces are checked against the same vectors the C++ unit tests use
(tests/data/sdpo_reference_vectors.json, a copy of /work/shared/golden/sdpo_reference_vectors.json):

- the DDIM schedule (alphas_cumprod) and the trailing timesteps;
- the DDIM step with log-prob (pred_x0 and the log-prob of the given x_prev);
- cosine similarities, the adaptive anchor and the dense rewards;
- discounted returns (gamma 0.99, 0.9, 1.0);
- the per-(prompt, step) stat tracker over three epochs (buffers persist);
- the SDPO loss and its gradients with respect to the two log-probs;
- DDPO's per-prompt tracker and PPO-clip loss (no golden vectors: hand-derived values).

Prints one line per check. Exit status: 0 all pass, 1 a failure, 77 torch cannot be imported (the
ctest skip code; the pyenv python3 on PATH has no torch, Debian's /usr/bin/python3 has).
"""
import json
import os
import sys

try:
    import numpy as np
    import torch
except ImportError:
    print("check_math.py: torch cannot be imported; skipped (use Debian's /usr/bin/python3)")
    sys.exit(77)

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree (ctest runs this there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CANDIDATES = [os.path.join(HERE, "..", "..", "tests", "data", "sdpo_reference_vectors.json"),
              "/work/shared/golden/sdpo_reference_vectors.json"]

failures = []


def check(name, got, want, rtol=1e-6, atol=1e-6):
    """max |got - want| <= atol + rtol |want|, elementwise; prints the worst error either way."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        failures.append(name)
        print(f"FAIL {name}: shape {got.shape} != {want.shape}")
        return
    err = np.abs(got - want)
    ok = bool(np.all(err <= atol + rtol * np.abs(want)))
    rel = float(np.max(err / np.maximum(np.abs(want), 1e-30))) if err.size else 0.0
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {float(err.max()) if err.size else 0.0:.2e}, "
          f"max rel err {rel:.2e}")
    if not ok:
        failures.append(name)


def main():
    path = next((p for p in CANDIDATES if os.path.exists(p)), None)
    if path is None:
        print("FAIL: no sdpo_reference_vectors.json found in " + ", ".join(CANDIDATES))
        return 1
    ref = json.load(open(path))
    print(f"reference vectors: {os.path.normpath(path)}")

    # --- schedule -------------------------------------------------------------------------------
    sch = ref["schedule"]
    ac = peer.alphas_cumprod(sch["beta_start"], sch["beta_end"], sch["num_train_timesteps"])
    idx = sorted(int(k) for k in sch["alphas_cumprod_at"])
    check("alphas_cumprod", [float(ac[i]) for i in idx], [sch["alphas_cumprod_at"][str(i)] for i in idx])
    for n, ts in sorted(sch["trailing_timesteps"].items(), key=lambda kv: int(kv[0])):
        check(f"trailing timesteps N={n}", peer.trailing_timesteps(int(n)), ts, rtol=0, atol=0)

    # --- DDIM step with log-prob ------------------------------------------------------------------
    # The reference computes in float32, as the peer samples and trains, so the peer runs these in
    # float32 too (the vectors allow 1e-4 relative here; the peer's op order matches the
    # reference's, so 1e-6 holds, and a change of op order would show).
    for case in ref["ddim_steps"]:
        x_t = torch.tensor(case["x_t"], dtype=torch.float32)
        out = torch.tensor(case["model_output"], dtype=torch.float32)
        x_prev = torch.tensor(case["x_prev"], dtype=torch.float32)
        t = torch.full((x_t.shape[0],), case["timestep"], dtype=torch.long)
        prev, pred_x0, logp = peer.ddim_step_with_logprob(ac, out, t, x_t, case["num_steps"], case["eta"],
                                                         prev_sample=x_prev)
        tag = f"ddim N={case['num_steps']} t={case['timestep']}"
        check(f"{tag} pred_x0", pred_x0, case["pred_x0"])
        check(f"{tag} log_prob", logp, case["log_prob"])
        check(f"{tag} x_prev passed through", prev, x_prev, rtol=0, atol=0)  # given, so returned as is

    # --- similarities, anchor, dense rewards --------------------------------------------------------
    d = ref["dense"]
    x0 = torch.tensor(d["pred_x0"], dtype=torch.float64)
    for interior in (False, True):
        sf, sa, sl, anchor = peer.similarities_and_anchor(x0, interior=interior)
        rng = "interior" if interior else "all"
        check(f"anchor ({rng})", anchor, d["anchor"], rtol=0, atol=0)
    sf, sa, sl, anchor = peer.similarities_and_anchor(x0, interior=True)
    check("sim_first", sf, d["sim_first"])
    check("sim_anchor", sa, d["sim_anchor"])
    check("sim_last", sl, d["sim_last"])
    q = torch.tensor(d["queried_first_anchor_last"], dtype=torch.float64)
    check("dense rewards", peer.dense_rewards(q, sf, sa, sl, anchor), d["dense_rewards"])

    # --- returns -----------------------------------------------------------------------------------
    r = ref["returns"]
    rw = torch.tensor(r["rewards"], dtype=torch.float64)
    check(f"returns gamma={r['gamma']}", peer.discounted_returns(rw, r["gamma"]), r["returns"])
    check("returns gamma=0.9", peer.discounted_returns(rw, 0.9), r["gamma_0.9"])
    check("returns gamma=1.0", peer.discounted_returns(rw, 1.0), r["gamma_1.0"])
    check("returns gamma=0 (G = R)", peer.discounted_returns(rw, 0.0), r["rewards"], rtol=0, atol=0)

    # --- per-(prompt, step) stat tracker -----------------------------------------------------------------
    tr = ref["tracker"]
    tracker = peer.PerStepPromptStatTracker(tr["buffer_size"], tr["min_count"], tr["std_epsilon"])
    for e, ep in enumerate(tr["epochs"]):
        check(f"per-step-prompt tracker epoch {e}", tracker.update(ep["prompts"], ep["returns"]), ep["advantages"])

    # --- SDPO loss and its gradients -------------------------------------------------------------------
    lo = ref["loss"]
    la = torch.tensor(lo["log_prob_a"], dtype=torch.float64, requires_grad=True)
    lb = torch.tensor(lo["log_prob_b"], dtype=torch.float64, requires_grad=True)
    t64 = lambda k: torch.tensor(lo[k], dtype=torch.float64)  # noqa: E731
    loss, _ = peer.sdpo_loss(la, lb, t64("old_log_prob_a"), t64("old_log_prob_b"), t64("advantage_a"),
                             t64("advantage_b"), t64("weight_lambda_pow_k"), lo["eta_log_scale"],
                             lo["clip_range"], lo["adv_clip_max"])
    loss.backward()
    check("sdpo loss", float(loss), lo["loss"])
    check("sdpo d loss / d log_prob_a", la.grad, lo["grad_log_prob_a"])
    check("sdpo d loss / d log_prob_b", lb.grad, lo["grad_log_prob_b"])

    # --- DDPO pieces (hand-derived) ------------------------------------------------------------------
    # Per-prompt tracker: epoch 1 falls back to the batch statistics (buffers too young); epoch 2's
    # "a" buffer holds 4 values, min_count 4, so its own statistics are used.
    pt = peer.PerPromptStatTracker(buffer_size=8, min_count=4)
    r1 = np.array([1.0, 2.0, 3.0, 6.0])
    got1 = pt.update(["a", "a", "b", "b"], r1)
    check("ddpo per-prompt tracker, batch fallback", got1, (r1 - r1.mean()) / (r1.std() + 1e-6))
    r2 = np.array([5.0, 0.0, 1.0, 1.0])
    got2 = pt.update(["a", "a", "b", "b"], r2)
    buf_a = np.array([1.0, 2.0, 5.0, 0.0])
    want2 = np.concatenate([(r2[:2] - buf_a.mean()) / (buf_a.std() + 1e-6),
                            (r2[2:] - r2.mean()) / (r2.std() + 1e-6)])  # "b" has 4 too: its own stats
    buf_b = np.array([3.0, 6.0, 1.0, 1.0])
    want2[2:] = (r2[2:] - buf_b.mean()) / (buf_b.std() + 1e-6)
    check("ddpo per-prompt tracker, own buffers", got2, want2)
    # PPO-clip at ratio 1 (theta = theta_old): loss = -mean(clip(A)), d loss / d logp = -clip(A)/B.
    adv = torch.tensor([0.5, -2.0, 7.0, -6.0], dtype=torch.float64)
    lp = torch.tensor([-0.7, -0.6, -0.5, -0.4], dtype=torch.float64, requires_grad=True)
    loss, kl, cf = peer.ddpo_loss(lp, lp.detach().clone(), adv, 1e-4, 5.0)
    loss.backward()
    clipped = adv.clamp(-5, 5)
    check("ddpo loss at ratio 1", float(loss), float(-clipped.mean()))
    check("ddpo d loss / d log_prob at ratio 1", lp.grad, -clipped / 4)
    check("ddpo approx_kl, clipfrac at ratio 1", [float(kl), float(cf)], [0.0, 0.0], rtol=0, atol=0)

    if failures:
        print(f"{len(failures)} check(s) FAILED: {', '.join(failures)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
