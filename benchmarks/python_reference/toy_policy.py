#!/usr/bin/python3
"""A small text-conditioned UNet, saved as TorchScript, for timing the framework against the peer.

Both sides of the comparison load the *same* file: the framework through its `torchscript` model
plugin (plugins/models/torchscript), the Python peer (peer.py) through `torch.jit.load`. So the
model work is identical and only the loops around it differ.

Architecture (about 0.5M parameters, chosen to look like a miniature SD UNet rather than to be good
at anything):

- a sinusoidal timestep embedding (as diffusers' `get_timestep_embedding`, flip_sin_to_cos) and a
  2-layer SiLU MLP;
- residual blocks GroupNorm -> SiLU -> conv3x3, with the time embedding added between the two convs
  (the SD ResnetBlock2D layout) and a 1x1 conv skip when the width changes;
- down path 32x32 (32 ch) -> 16x16 (64 ch) -> 8x8 (96 ch), up path back with skip concatenations;
- cross-attention to the text condition `cond` (B, L, D = 64) at 16x16 and 8x8 (the SD
  Transformer2DModel's attn2, single-head here), so the text enters the way it does in SD.

forward(x_t, t, cond) -> epsilon prediction with the shape of x_t; x_t (B, 3, 32, 32) float32,
t (B,) int64 in [0, 999], cond (B, L, 64).

Usage: /usr/bin/python3 toy_policy.py OUT.pt [--seed 0] [--cond-dim 64]
       /usr/bin/python3 toy_policy.py OUT.pt --time [--threads 2]   # also time the bare model calls
"""
import argparse
import math
import sys

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError:  # the pyenv python3 on PATH has no torch; Debian's /usr/bin/python3 has
    print("toy_policy.py: torch cannot be imported (use Debian's /usr/bin/python3)", file=sys.stderr)
    sys.exit(77)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        half = dim // 2
        # Registered as a buffer so the frequencies travel with the TorchScript archive.
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs)
        self.lin1 = nn.Linear(dim, out_dim)
        self.lin2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.to(torch.float32).unsqueeze(1) * self.freqs.unsqueeze(0)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # flip_sin_to_cos
        return self.lin2(F.silu(self.lin1(emb)))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb)).unsqueeze(-1).unsqueeze(-1)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class CrossAttention(nn.Module):
    """Single-head cross-attention of the feature map (queries) to the text tokens (keys/values)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(cond_dim, channels, bias=False)
        self.v = nn.Linear(cond_dim, channels, bias=False)
        self.out = nn.Linear(channels, channels)
        self.scale = 1.0 / math.sqrt(channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q = self.q(tokens)
        k = self.k(cond)
        v = self.v(cond)
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * self.scale, dim=-1)  # (B, HW, L)
        o = self.out(torch.bmm(attn, v))
        return x + o.transpose(1, 2).reshape(b, c, h, w)


class ToyPolicy(nn.Module):
    def __init__(self, channels: int = 3, cond_dim: int = 64, widths=(32, 64, 96), temb: int = 128):
        super().__init__()
        w0, w1, w2 = widths
        self.time = TimestepEmbedding(64, temb)
        self.conv_in = nn.Conv2d(channels, w0, 3, padding=1)
        self.down0 = ResBlock(w0, w0, temb)                      # 32x32
        self.pool0 = nn.Conv2d(w0, w0, 3, stride=2, padding=1)  # -> 16x16
        self.down1 = ResBlock(w0, w1, temb)
        self.attn1 = CrossAttention(w1, cond_dim)
        self.pool1 = nn.Conv2d(w1, w1, 3, stride=2, padding=1)  # -> 8x8
        self.mid = ResBlock(w1, w2, temb)
        self.attn_mid = CrossAttention(w2, cond_dim)
        self.up1 = ResBlock(w2 + w1, w1, temb)                   # 16x16, skip from down1
        self.attn_up1 = CrossAttention(w1, cond_dim)
        self.up0 = ResBlock(w1 + w0, w0, temb)                   # 32x32, skip from down0
        self.norm_out = nn.GroupNorm(8, w0)
        self.conv_out = nn.Conv2d(w0, channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb = self.time(t)
        h = self.conv_in(x_t)
        s0 = self.down0(h, temb)
        h = self.pool0(s0)
        s1 = self.attn1(self.down1(h, temb), cond)
        h = self.pool1(s1)
        h = self.attn_mid(self.mid(h, temb), cond)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.attn_up1(self.up1(torch.cat([h, s1], dim=1), temb), cond)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.up0(torch.cat([h, s0], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def build(seed: int = 0, cond_dim: int = 64) -> torch.nn.Module:
    torch.manual_seed(seed)  # fixed seed: the same file every time, on both sides of the comparison
    net = ToyPolicy(cond_dim=cond_dim)
    # Scale the output conv down so that the untrained epsilon prediction is small and the DDIM
    # trajectories stay in a sane range (the weights are random: only the timing matters).
    with torch.no_grad():
        net.conv_out.weight.mul_(0.1)
        net.conv_out.bias.zero_()
    return torch.jit.script(net)


def time_calls(module, threads: int, cond_dim: int) -> None:
    """The bare model work of the two loops' layouts, in milliseconds per call: no-grad forwards of
    batch 8 (the peer's per-trajectory pipeline call) and 16 (the framework's pair-batched one),
    forward+backward of batch 2 (the peer's separate a/b forwards) and 4 (the framework's batched
    pair). Warmed first: TorchScript's profiling executor optimizes after the first calls."""
    import time
    torch.set_num_threads(threads)

    def inputs(b: int):
        return (torch.randn(b, 3, 32, 32), torch.full((b,), 999, dtype=torch.int64), torch.randn(b, 12, cond_dim))

    def per_call(b: int, grad: bool, n: int = 20, warm: int = 30) -> float:
        x, t, c = inputs(b)
        for i in range(warm + n):
            if i == warm:
                t0 = time.perf_counter()
            if grad:
                module(x, t, c).sum().backward()
            else:
                with torch.no_grad():
                    module(x, t, c)
        return (time.perf_counter() - t0) / n * 1000

    print(f"bare calls at {threads} intra-op threads (ms per call): "
          f"no-grad forward B=8 {per_call(8, False):.1f}, B=16 {per_call(16, False):.1f}; "
          f"forward+backward B=2 {per_call(2, True):.1f}, B=4 {per_call(4, True):.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="path of the TorchScript archive to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cond-dim", type=int, default=64)
    ap.add_argument("--time", action="store_true", help="then time the bare model calls of both loops' layouts")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for --time")
    args = ap.parse_args()
    scripted = build(args.seed, args.cond_dim)
    # A smoke forward before saving, so a broken file is never written.
    x = torch.randn(2, 3, 32, 32)
    out = scripted(x, torch.tensor([999, 19], dtype=torch.int64), torch.randn(2, 12, args.cond_dim))
    assert out.shape == x.shape, out.shape
    torch.jit.save(scripted, args.out)
    n = sum(p.numel() for p in scripted.parameters())
    print(f"toy_policy: wrote {args.out} ({n} parameters, seed {args.seed}, cond dim {args.cond_dim})")
    if args.time:
        time_calls(torch.jit.load(args.out), args.threads, args.cond_dim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
