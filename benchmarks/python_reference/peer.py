#!/usr/bin/python3
"""The Python peer: SDPO and DDPO training loops in the structure of the official Python scripts.

This is our own code (nothing is copied); it reproduces the *structure* of the reference training
scripts, as research/algorithms.md describes them, around a policy that the framework runs too,
so that `compare.py` can time the C++ framework against "what a user of the Python stacks runs" on
the very same model: a TorchScript file (toy_policy.py; the framework's `torchscript` plugin loads
the same file), or `toy_unet:FILE.safetensors`, the eager PyTorch module of toy_unet.py with those
weights (the framework's C++ `toy_unet` on the same checkpoint). Every parameter trains.

  SDPO  (ZiyiZhang27/sdpo, scripts/train_sdpo.py; algorithms.md section 7)
    - sampling: per sampling batch, two pipeline calls (`pipeline_with_logprob` here, standing for
      pipeline_with_logprob_sdpo.py): trajectory a with fresh noise, trajectory b with the same
      prompts and a's initial noise (7.1), each a batch of B_s, not one batch of 2 B_s;
    - the pipeline keeps x^(k), log-probs and predicted x0 per step and computes the cosine
      similarities and adaptive anchor on the predicted-x0 latents (7.1);
    - three reward queries per trajectory (first, anchor, last), one call per slot on cat(a, b),
      dense rewards by similarity weighting (7.2), discounted returns, per-(prompt, step) stat
      tracker (sdpo_pytorch/stat_tracking.py, 7.3);
    - training: shuffle pairs, one step permutation per pair, rebatch into B_t; the
      position-outer loop (for j in steps: for each mini-batch), SEPARATE forwards for a and b,
      the clipped squared loss (7.4), accelerate-style accumulation G_acc (not times T), grad-norm
      clip at sync, AdamW (7.5).
  DDPO  (kvablack/ddpo-pytorch, scripts/train.py; algorithms.md section 4)
    - sampling: n_b pipeline calls of B_s trajectories, reward of the decoded final latent;
      PerPromptStatTracker (ddpo_pytorch/stat_tracking.py, 4.2);
    - training: shuffle, per-sample step permutation, rebatch; mini-batch-outer, timestep-inner,
      PPO-clip loss (4.3), accumulation G_acc * T, clip at sync, AdamW (4.4).

The DDIM step with its log-prob is ddim_with_logprob.py's math (algorithms.md 2.4), the same as
framework/math/src/ddim.cpp; check_math.py checks it and the other pieces against the golden
vectors. The text encoder is a deterministic random embedding table (the framework side runs
toy_text with layers 0: an embedding lookup, too), the reward is Hasler-Suesstrunk colorfulness of
the identity-decoded image (rewards/colorfulness), both negligible next to the UNet.

Prints one JSON line per epoch: {"epoch", "warmup", "sampling_s", "training_s", "wall_s", ...}.
"""
import argparse
import json
import math
import os
import random
import sys
import time
from collections import deque

try:
    import numpy as np
    import torch
except ImportError:
    print("peer.py: torch cannot be imported (use Debian's /usr/bin/python3)", file=sys.stderr)
    sys.exit(77)

# ----------------------------------------------------------------------------------------------
# DDIM schedule and step with log-prob (algorithms.md 2.1-2.4; ddim_with_logprob.py)
# ----------------------------------------------------------------------------------------------


def alphas_cumprod(beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000):
    """2.1 scaled_linear: float32 linspace of square roots, squared, then a float32 cumprod."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def trailing_timesteps(num_steps, num_train_timesteps=1000):
    """2.3 trailing spacing: round(arange(T, 0, -T/N)) - 1, numpy's round half to even."""
    ratio = num_train_timesteps / num_steps
    return (np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1).tolist()


def ddim_step_with_logprob(ac, model_output, timestep, sample, num_steps, eta=1.0, prev_sample=None,
                           num_train_timesteps=1000):
    """One DDIM step (epsilon prediction) and the Gaussian log-prob of the transition (2.4).

    Returns (prev_sample, pred_original_sample, log_prob); log_prob is (B,), the mean over all
    non-batch dims. Gradients flow only through the mean (prev_sample is detached in the density).
    """
    shape = [sample.shape[0]] + [1] * (sample.dim() - 1)
    t = timestep.to(torch.int64)
    # 2.4 steps 1-2: t_prev = t - T // N, clamped before the >= 0 test (quirk 11.1), so the final
    # alpha is never used and the last step reads alphas_cumprod[0].
    t_prev = (t - num_train_timesteps // num_steps).clamp(0, num_train_timesteps - 1)
    a_t = ac.gather(0, t).view(shape).to(sample.dtype)
    a_prev = ac.gather(0, t_prev).view(shape).to(sample.dtype)
    b_t = 1 - a_t
    pred_x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5  # epsilon prediction
    pred_eps = model_output
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std_dev = eta * variance ** 0.5
    # The reference takes the square root unguarded; the framework clamps at 0 (the value is
    # positive for every schedule used here, so both agree).
    direction = (1 - a_prev - std_dev ** 2).clamp_min(0) ** 0.5 * pred_eps
    mean = a_prev ** 0.5 * pred_x0 + direction
    if prev_sample is None:
        prev_sample = mean + std_dev * torch.randn_like(sample)
    log_prob = (-((prev_sample.detach() - mean) ** 2) / (2 * std_dev ** 2) - torch.log(std_dev)
                - math.log(math.sqrt(2 * math.pi)))
    log_prob = log_prob.mean(dim=tuple(range(1, sample.dim())))
    return prev_sample.to(sample.dtype), pred_x0, log_prob


# ----------------------------------------------------------------------------------------------
# Similarities, dense rewards, returns (algorithms.md 7.1-7.3)
# ----------------------------------------------------------------------------------------------


def cosine_to_step(pred_x0, ref_index):
    """cos(x0^(k), x0^(ref_b)) for every k: pred_x0 (B, T, ...), ref_index (B,) -> (B, T)."""
    flat = pred_x0.flatten(2)
    ref = flat[torch.arange(flat.shape[0]), ref_index].unsqueeze(1)
    return torch.nn.functional.cosine_similarity(flat, ref, dim=2)


def similarities_and_anchor(pred_x0, interior=True):
    """7.1: sim to the first and last step, the anchor argmin of their sum, sim to the anchor.

    interior=True searches {1..T-2} (paper Eq. 10, the framework manifest's anchor_range); False
    searches all steps (the reference code, quirk 11.3).
    """
    b, t = pred_x0.shape[:2]
    sim_first = cosine_to_step(pred_x0, torch.zeros(b, dtype=torch.long))
    sim_last = cosine_to_step(pred_x0, torch.full((b,), t - 1, dtype=torch.long))
    total = sim_first + sim_last
    if interior and t >= 3:
        anchor = total[:, 1:t - 1].argmin(dim=1) + 1
    else:
        anchor = total.argmin(dim=1)
    sim_anchor = cosine_to_step(pred_x0, anchor)
    return sim_first, sim_anchor, sim_last, anchor


def dense_rewards(q, sim_first, sim_anchor, sim_last, anchor):
    """7.2: R_k = (Rf sf + Rm sa + Rl sl) / (sf + sa + sl); exact at 0, T-1, then at the anchor."""
    rf, rm, rl = q[:, 0:1], q[:, 1:2], q[:, 2:3]
    r = (rf * sim_first + rm * sim_anchor + rl * sim_last) / (sim_first + sim_anchor + sim_last)
    r = r.clone()
    r[:, 0] = q[:, 0]
    r[:, -1] = q[:, 2]
    r[torch.arange(r.shape[0]), anchor] = q[:, 1]
    return r


def discounted_returns(rewards, gamma):
    """7.3: G_{T-1} = R_{T-1}, G_k = R_k + gamma G_{k+1}; gamma 0 gives G = R."""
    if gamma <= 0:
        return rewards.clone()
    g = rewards.clone()
    for k in range(rewards.shape[1] - 2, -1, -1):
        g[:, k] = rewards[:, k] + gamma * g[:, k + 1]
    return g


class PerStepPromptStatTracker:
    """7.3 (sdpo_pytorch/stat_tracking.py): running buffers per (prompt, step k), persistent across
    epochs, updated before they are read; until a buffer holds min_count values, the batch mean/std
    of step k over all prompts is used. Population std, +1e-6."""

    def __init__(self, buffer_size, min_count, eps=1e-6):
        self.buffer_size, self.min_count, self.eps = buffer_size, min_count, eps
        self.stats = {}

    def update(self, prompts, returns):
        prompts = np.array(prompts)
        returns = np.asarray(returns, dtype=np.float64)
        adv = np.empty_like(returns)
        for prompt in np.unique(prompts):
            rows = prompts == prompt
            for k in range(returns.shape[1]):
                buf = self.stats.setdefault((prompt, k), deque(maxlen=self.buffer_size))
                buf.extend(returns[rows, k])
                if len(buf) < self.min_count:
                    mu, sigma = np.mean(returns[:, k]), np.std(returns[:, k])
                else:
                    mu, sigma = np.mean(buf), np.std(buf)
                adv[rows, k] = (returns[rows, k] - mu) / (sigma + self.eps)
        return adv


class PerPromptStatTracker:
    """4.2 (ddpo_pytorch/stat_tracking.py): one running buffer per prompt of scalar rewards; the
    batch mean/std of all rewards until min_count. Population std, +1e-6."""

    def __init__(self, buffer_size, min_count, eps=1e-6):
        self.buffer_size, self.min_count, self.eps = buffer_size, min_count, eps
        self.stats = {}

    def update(self, prompts, rewards):
        prompts = np.array(prompts)
        rewards = np.asarray(rewards, dtype=np.float64)
        adv = np.empty_like(rewards)
        for prompt in np.unique(prompts):
            rows = prompts == prompt
            buf = self.stats.setdefault(prompt, deque(maxlen=self.buffer_size))
            buf.extend(rewards[rows])
            if len(buf) < self.min_count:
                mu, sigma = np.mean(rewards), np.std(rewards)
            else:
                mu, sigma = np.mean(buf), np.std(buf)
            adv[rows] = (rewards[rows] - mu) / (sigma + self.eps)
        return adv


# ----------------------------------------------------------------------------------------------
# Losses (algorithms.md 7.4 and 4.3)
# ----------------------------------------------------------------------------------------------


def sdpo_loss(log_prob_a, log_prob_b, old_a, old_b, adv_a, adv_b, weight, eta, clip_range, adv_clip_max):
    """7.4: mean over pairs of max((w dr - dA)^2, (w d clip(r) - dA)^2), w = lambda^k / eta."""
    d_adv = (adv_a.clamp(-adv_clip_max, adv_clip_max) - adv_b.clamp(-adv_clip_max, adv_clip_max)).detach()
    w = weight / eta
    ratio_a = log_prob_a - old_a.detach()
    ratio_b = log_prob_b - old_b.detach()
    unclipped = (w * (ratio_a - ratio_b) - d_adv) ** 2
    if clip_range <= 0:
        return unclipped.mean(), torch.zeros(())
    # clip(l, l_old +- eps) - l_old == clip(ratio, +-eps): zero gradient outside the range.
    clipped = (w * (ratio_a.clamp(-clip_range, clip_range) - ratio_b.clamp(-clip_range, clip_range)) - d_adv) ** 2
    return torch.maximum(unclipped, clipped).mean(), (clipped > unclipped).float().mean()


def ddpo_loss(log_prob, old_log_prob, advantages, clip_range, adv_clip_max):
    """4.3 DDPO_IS: mean of max(-A ratio, -A clip(ratio, 1 +- eps)); A clipped at loss time."""
    adv = advantages.clamp(-adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    approx_kl = 0.5 * ((log_prob - old_log_prob) ** 2).mean()
    clipfrac = ((ratio - 1.0).abs() > clip_range).float().mean()
    return loss, approx_kl, clipfrac


def colorfulness(images):
    """rewards/colorfulness: Hasler-Suesstrunk M on 0..255 RGB, population std, float64."""
    x = images.detach().to(torch.float64).clamp(0, 1).mul(255).flatten(2)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    std_root = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    mean_root = (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
    return (std_root + 0.3 * mean_root).to(torch.float32)


def decode(latents):
    """The identity decoder of pixel-space models: (x + 1) / 2 in [0, 1]."""
    return ((latents + 1) * 0.5).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Prompts and text conditioning (stand-ins for the tokenizer and text encoder)
# ----------------------------------------------------------------------------------------------

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
# 45 training prompts, like the toy world's standard set (its strings differ; the tracker only
# needs distinct keys).
PROMPTS = ([f"a {c} {s}" for c in COLORS for s in SHAPES] + [f"two {c} {s}s" for c in COLORS for s in SHAPES]
           + [f"a {c} {s} on the left" for c in COLORS[:3] for s in SHAPES])


class TextEncoder:
    """Deterministic random word embeddings, padded/cut to max_words: cond (B, L, D)."""

    def __init__(self, dim=64, max_words=12, seed=0):
        words = sorted({w for p in PROMPTS for w in p.split()})
        self.index = {w: i + 1 for i, w in enumerate(words)}  # 0 = padding
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(len(words) + 1, dim, generator=g) * 0.5
        self.max_words = max_words

    def tokenize(self, prompts):
        ids = torch.zeros(len(prompts), self.max_words, dtype=torch.long)
        for i, p in enumerate(prompts):
            toks = [self.index.get(w, 0) for w in p.split()][:self.max_words]
            ids[i, :len(toks)] = torch.tensor(toks, dtype=torch.long)
        return ids

    def __call__(self, ids):
        return self.table[ids]


# ----------------------------------------------------------------------------------------------
# Sampling pipeline (pipeline_with_logprob[_sdpo].py)
# ----------------------------------------------------------------------------------------------


class Counts:
    def __init__(self):
        self.no_grad_forwards = self.grad_forwards = self.backwards = self.updates = 0


@torch.no_grad()
def pipeline_with_logprob(model, embeds, ac, num_steps, eta, latent_shape, counts, latents=None,
                          keep_pred_x0=False):
    """One pipeline call: DDIM over the trailing timesteps, with the log-prob of every step.

    Returns (all_latents (T+1 list), all_log_probs (T list), all_pred_x0 (T list or None)).
    `latents` given: the initial noise (how SDPO's b reuses a's)."""
    b = embeds.shape[0]
    if latents is None:
        latents = torch.randn(b, *latent_shape)
    timesteps = trailing_timesteps(num_steps)
    all_latents, all_log_probs, all_pred_x0 = [latents], [], []
    for t in timesteps:
        t_batch = torch.full((b,), t, dtype=torch.long)
        noise_pred = model(latents, t_batch, embeds)
        counts.no_grad_forwards += 1
        latents, pred_x0, log_prob = ddim_step_with_logprob(ac, noise_pred, t_batch, latents, num_steps, eta)
        all_latents.append(latents)
        all_log_probs.append(log_prob)
        if keep_pred_x0:
            all_pred_x0.append(pred_x0)
    return all_latents, all_log_probs, (all_pred_x0 if keep_pred_x0 else None)


class Accumulator:
    """accelerate's gradient accumulation as the reference scripts use it: backward divides the loss
    by the accumulation count; optimizer.step/zero_grad only act when a step counter reaches a
    multiple of it; the grad-norm clip runs at those sync points."""

    def __init__(self, params, optimizer, steps, max_grad_norm, counts):
        self.params, self.optimizer, self.steps = params, optimizer, steps
        self.max_grad_norm, self.counts, self.step_count = max_grad_norm, counts, 0

    def backward_and_step(self, loss):
        self.step_count += 1
        (loss / self.steps).backward()
        self.counts.backwards += 1
        if self.step_count % self.steps == 0:
            self._update()

    def flush(self):
        # The framework updates on a trailing partial accumulation; shapes here divide evenly.
        if self.step_count % self.steps != 0:
            self._update()

    def _update(self):
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.counts.updates += 1


def permute_steps(samples, keys, n, t):
    """4.4 / 7.5 steps 1-2: permute the sample axis, then an independent step permutation per sample."""
    perm = torch.randperm(n)
    samples = {k: v[perm] for k, v in samples.items()}
    perms = torch.stack([torch.randperm(t) for _ in range(n)])
    rows = torch.arange(n)[:, None]
    for k in keys:
        samples[k] = samples[k][rows, perms]
    return samples


def rebatch(samples, n, batch):
    return [{k: v[s:s + batch] for k, v in samples.items()} for s in range(0, n, batch)]


# ----------------------------------------------------------------------------------------------
# One SDPO epoch (train_sdpo.py's main loop)
# ----------------------------------------------------------------------------------------------


def sdpo_epoch(a, model, text, ac, tracker, acc, counts):
    t_start = time.perf_counter()
    T, shape = a.steps, a.latent_shape
    timesteps = torch.tensor(trailing_timesteps(T), dtype=torch.long)
    model.eval()
    samples, prompts_all, sampling_s = [], [], 0.0
    for _ in range(a.batches):
        t0 = time.perf_counter()
        prompts = [random.choice(PROMPTS) for _ in range(a.pairs)]
        embeds = text(text.tokenize(prompts))
        # Two pipeline calls per batch: a with fresh noise, b with a's initial noise (7.1).
        lat_a, lp_a, x0_a = pipeline_with_logprob(model, embeds, ac, T, a.eta, shape, counts, keep_pred_x0=True)
        lat_b, lp_b, x0_b = pipeline_with_logprob(model, embeds, ac, T, a.eta, shape, counts, latents=lat_a[0],
                                                  keep_pred_x0=True)
        sampling_s += time.perf_counter() - t0
        x0_a, x0_b = torch.stack(x0_a, 1), torch.stack(x0_b, 1)
        sims_a, sims_b = similarities_and_anchor(x0_a), similarities_and_anchor(x0_b)
        # Three reward queries per trajectory, one call per slot on cat(a, b): (first, anchor, last).
        q = []
        for slot in range(3):
            idx_a = [torch.zeros(a.pairs, dtype=torch.long), sims_a[3], torch.full((a.pairs,), T - 1)][slot]
            idx_b = [torch.zeros(a.pairs, dtype=torch.long), sims_b[3], torch.full((a.pairs,), T - 1)][slot]
            rows = torch.arange(a.pairs)
            imgs = decode(torch.cat([x0_a[rows, idx_a], x0_b[rows, idx_b]]))
            q.append(colorfulness(imgs))
        q = torch.stack(q, 1)  # (2B, 3)
        samples.append({
            "embeds": embeds,
            "timesteps": timesteps.repeat(a.pairs, 1),
            "latents1": torch.stack(lat_a, 1)[:, :-1], "next_latents1": torch.stack(lat_a, 1)[:, 1:],
            "latents2": torch.stack(lat_b, 1)[:, :-1], "next_latents2": torch.stack(lat_b, 1)[:, 1:],
            "log_probs1": torch.stack(lp_a, 1), "log_probs2": torch.stack(lp_b, 1),
            "rewards1": dense_rewards(q[:a.pairs], *sims_a), "rewards2": dense_rewards(q[a.pairs:], *sims_b),
        })
        prompts_all += prompts
    samples = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}
    n = samples["timesteps"].shape[0]
    # Returns and the per-(prompt, step) tracker on [a rows; b rows] (7.3).
    g = discounted_returns(torch.cat([samples.pop("rewards1"), samples.pop("rewards2")]).double(), a.gamma)
    adv = torch.as_tensor(tracker.update(prompts_all * 2, g.numpy()), dtype=torch.float32)
    samples["advantages1"], samples["advantages2"] = adv[:n], adv[n:]
    samples["lam"] = (a.lam ** torch.arange(T, dtype=torch.float64)).float().repeat(n, 1)

    # Training (7.5): shuffle, per-pair step permutation, rebatch, position-outer loop.
    t0 = time.perf_counter()
    keys = ["timesteps", "latents1", "next_latents1", "log_probs1", "advantages1",
            "latents2", "next_latents2", "log_probs2", "advantages2", "lam"]
    batched = rebatch(permute_steps(samples, keys, n, T), n, a.train_batch)
    model.train()
    info = []
    for j in range(T):
        for mb in batched:
            # SEPARATE forwards for a and b, as the reference does.
            out_a = model(mb["latents1"][:, j], mb["timesteps"][:, j], mb["embeds"])
            _, _, logp_a = ddim_step_with_logprob(ac, out_a, mb["timesteps"][:, j], mb["latents1"][:, j], T, a.eta,
                                                  prev_sample=mb["next_latents1"][:, j])
            out_b = model(mb["latents2"][:, j], mb["timesteps"][:, j], mb["embeds"])
            _, _, logp_b = ddim_step_with_logprob(ac, out_b, mb["timesteps"][:, j], mb["latents2"][:, j], T, a.eta,
                                                  prev_sample=mb["next_latents2"][:, j])
            counts.grad_forwards += 2
            loss, clipfrac = sdpo_loss(logp_a, logp_b, mb["log_probs1"][:, j], mb["log_probs2"][:, j],
                                       mb["advantages1"][:, j], mb["advantages2"][:, j], mb["lam"][:, j],
                                       a.log_scale, a.clip_range, a.adv_clip_max)
            info.append((loss.detach(), clipfrac))
            acc.backward_and_step(loss)
    acc.flush()
    training_s = time.perf_counter() - t0
    loss_mean = float(torch.stack([x[0] for x in info]).mean())
    return {"sampling_s": sampling_s, "training_s": training_s, "wall_s": time.perf_counter() - t_start,
            "return_last_mean": float(g[:, -1].mean()),
            "loss": loss_mean}


# ----------------------------------------------------------------------------------------------
# One DDPO epoch (ddpo-pytorch scripts/train.py)
# ----------------------------------------------------------------------------------------------


def ddpo_epoch(a, model, text, ac, tracker, acc, counts):
    t_start = time.perf_counter()
    T, shape = a.steps, a.latent_shape
    timesteps = torch.tensor(trailing_timesteps(T), dtype=torch.long)
    model.eval()
    samples, prompts_all, sampling_s = [], [], 0.0
    for _ in range(a.batches):
        t0 = time.perf_counter()
        prompts = [random.choice(PROMPTS) for _ in range(a.pairs)]
        embeds = text(text.tokenize(prompts))
        lat, lp, _ = pipeline_with_logprob(model, embeds, ac, T, a.eta, shape, counts)
        sampling_s += time.perf_counter() - t0
        lat = torch.stack(lat, 1)
        samples.append({"embeds": embeds, "timesteps": timesteps.repeat(a.pairs, 1), "latents": lat[:, :-1],
                        "next_latents": lat[:, 1:], "log_probs": torch.stack(lp, 1),
                        "rewards": colorfulness(decode(lat[:, -1]))})  # 4.1: the final latent x^(T)
        prompts_all += prompts
    samples = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}
    n = samples["timesteps"].shape[0]
    rewards = samples.pop("rewards")
    samples["advantages"] = torch.as_tensor(tracker.update(prompts_all, rewards.numpy()), dtype=torch.float32)

    # Training (4.4): shuffle, per-sample step permutation, rebatch; mini-batch-outer, step-inner.
    t0 = time.perf_counter()
    batched = rebatch(permute_steps(samples, ["timesteps", "latents", "next_latents", "log_probs"], n, T),
                      n, a.train_batch)
    model.train()
    info = []
    for mb in batched:
        for j in range(T):
            out = model(mb["latents"][:, j], mb["timesteps"][:, j], mb["embeds"])
            counts.grad_forwards += 1
            _, _, logp = ddim_step_with_logprob(ac, out, mb["timesteps"][:, j], mb["latents"][:, j], T, a.eta,
                                                prev_sample=mb["next_latents"][:, j])
            loss, approx_kl, clipfrac = ddpo_loss(logp, mb["log_probs"][:, j], mb["advantages"], a.clip_range,
                                                  a.adv_clip_max)
            info.append((loss.detach(), approx_kl.detach(), clipfrac))
            acc.backward_and_step(loss)
    acc.flush()
    training_s = time.perf_counter() - t0
    return {"sampling_s": sampling_s, "training_s": training_s, "wall_s": time.perf_counter() - t_start,
            "reward_mean": float(rewards.mean()), "loss": float(torch.stack([x[0] for x in info]).mean())}


def load_model(spec):
    """A TorchScript file (torch.jit.load), or toy_unet:FILE.safetensors: the eager ToyUNet of
    toy_unet.py (the framework's default options) loaded strictly from FILE."""
    if spec.startswith("toy_unet:"):
        sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import toy_unet
        return toy_unet.from_safetensors(spec[len("toy_unet:"):])
    return torch.jit.load(spec)


def main():
    ap = argparse.ArgumentParser(description="Python peer of the SDPO / DDPO reference training loops")
    ap.add_argument("--algorithm", choices=["sdpo", "ddpo"], default="sdpo")
    ap.add_argument("--model", required=True,
                    help="TorchScript file (toy_policy.py), or toy_unet:FILE.safetensors (the eager module of "
                         "toy_unet.py with those weights)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first (sdpo bench runs 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=20, help="T, denoising steps per trajectory")
    ap.add_argument("--pairs", "--batch", dest="pairs", type=int, default=8,
                    help="B_s: pairs (sdpo) or trajectories (ddpo) per sampling batch")
    ap.add_argument("--batches", type=int, default=1, help="n_b: sampling batches per epoch")
    ap.add_argument("--train-batch", type=int, default=2, help="B_t: pairs / trajectories per mini-batch")
    ap.add_argument("--accumulation", type=int, default=2, help="G_acc (ddpo: times T)")
    ap.add_argument("--lr", type=float, default=1.5e-5)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--clip-range", type=float, default=1e-4)
    ap.add_argument("--adv-clip-max", type=float, default=5.0)
    ap.add_argument("--gamma", type=float, default=0.99)
    ap.add_argument("--lam", type=float, default=0.99)
    ap.add_argument("--log-scale", type=float, default=1.0, help="SDPO eta (log-ratio scale)")
    ap.add_argument("--eta", type=float, default=1.0, help="DDIM eta")
    ap.add_argument("--buffer-size", type=int, default=32)
    ap.add_argument("--min-count", type=int, default=16)
    ap.add_argument("--cond-dim", type=int, default=64)
    ap.add_argument("--max-words", type=int, default=12)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    a.latent_shape = (3, 32, 32)

    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    model = load_model(a.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), weight_decay=a.weight_decay, eps=1e-8)
    counts = Counts()
    # SDPO accumulates G_acc mini-batches (7.5); DDPO G_acc mini-batches times every step (4.4).
    acc_steps = a.accumulation if a.algorithm == "sdpo" else a.accumulation * a.steps
    acc = Accumulator(params, optimizer, acc_steps, a.max_grad_norm, counts)
    if a.algorithm == "sdpo":
        tracker, epoch_fn = PerStepPromptStatTracker(a.buffer_size, a.min_count), sdpo_epoch
    else:
        tracker, epoch_fn = PerPromptStatTracker(a.buffer_size, a.min_count), ddpo_epoch
    text = TextEncoder(a.cond_dim, a.max_words)
    ac = alphas_cumprod()
    for epoch in range(a.warmup + a.epochs):
        before = vars(counts).copy()
        row = epoch_fn(a, model, text, ac, tracker, acc, counts)
        row = {"epoch": epoch, "warmup": epoch < a.warmup, "algorithm": a.algorithm, **row,
               **{k: v - before[k] for k, v in vars(counts).items()}}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
