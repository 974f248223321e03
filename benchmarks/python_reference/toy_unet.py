#!/usr/bin/python3
"""The framework's `toy_unet` as an eager PyTorch module, with a strict safetensors loader.

A Python user of the framework's toy base model (experiments/assets/toy_unet.safetensors) would run
it as an ordinary `torch.nn.Module`. This file is that module, written from the C++
(models/toy/src/toy_unet.cpp, plugins/models/toy_unet/README.md) and nothing else, so that peer.py
can train the same network, on the same weights, as the framework's own C++ model:

- time: sinusoid of t with d = channels[0] (+1 if odd) features, the cos half then the sin half,
  frequencies exp(-ln(10000) i / (d/2)) for i < d/2; Linear d->4c0, SiLU, Linear 4c0->4c0, SiLU.
  The SiLU after the second linear is applied once and shared by every res block's `time_proj`;
- res block: GroupNorm -> SiLU -> conv3x3 -> + time_proj(temb) per channel -> GroupNorm -> SiLU ->
  conv3x3, plus the input (through a 1x1 `skip` conv when the width changes);
- cross-attention (levels >= 1): GroupNorm on the image features, q = to_q (no bias) per position,
  k, v = to_k, to_v (no bias) of the text tokens, `heads` heads of d = C / heads channels (head h
  owns channels h d .. h d + d - 1), softmax(q k^T / sqrt(d)) over the L tokens (the 1/sqrt(d) is
  applied to k, as the C++ does), to_out (with bias) per position, residual;
- down.l: res (+ attn for l >= 1), its output is skip l, then a 3x3 stride-2 `downsample` (all but
  the last level);
- up.l, run coarsest first: res over [h, skip l] (the bottom level takes h alone: it continues
  straight from down's output), attn for l >= 1, then for l >= 1 a 1x1 `upsample` conv to
  channels[l-1] and nearest x2;
- out: GroupNorm -> SiLU -> conv_out 3x3. Every GroupNorm has eps 1e-5 and an affine part
  (libtorch's and PyTorch's default).

The C++ runs channels-last and calls oneDNN for every convolution; this module runs as a Python
user's would, in the default NCHW layout through torch.nn.functional. The `state_dict()` keys and
shapes are those of the C++ module (e.g. `conv_in.weight`, `down.1.attn.to_q.weight` [C, C],
`up.2.upsample.weight`), so the shipped file loads strictly. `up` is a ModuleDict keyed "2", "1",
"0" (the run order, coarsest first): the same keys as the C++ ModuleList, and a loop that
torch.jit.script compiles (its ModuleList slicing with a negative step runs the wrong levels in
1.13).

Usage: /usr/bin/python3 toy_unet.py --self-test             # strict load of the shipped file, shapes
       /usr/bin/python3 toy_unet.py --export OUT.pt         # TorchScript archive with the weights
       /usr/bin/python3 toy_unet.py --check --sdpo BIN      # equal to the C++ model, through sdpo train
       /usr/bin/python3 toy_unet.py --time [--threads 2]    # bare calls of the eager module
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

try:
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError:  # the pyenv python3 on PATH has no torch; Debian's /usr/bin/python3 has
    print("toy_unet.py: torch cannot be imported (use Debian's /usr/bin/python3)", file=sys.stderr)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHIPPED = os.path.join(ROOT, "experiments", "assets", "toy_unet.safetensors")
SHIPPED_PARAMETERS = 556483  # plugins/models/toy_unet/README.md, with the default options

# ----------------------------------------------------------------------------------------------
# The network (models/toy/src/toy_unet.cpp)
# ----------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, time_act: torch.Tensor) -> torch.Tensor:
        """x (B, cin, H, W); time_act (B, time_dim), the already SiLU-activated time embedding."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(time_act)[:, :, None, None]  # one shift per channel
        h = self.conv2(F.silu(self.norm2(h)))
        if self.skip is not None:
            return self.skip(x) + h
        return x + h


class CrossAttention(nn.Module):
    def __init__(self, channels: int, cond_dim: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.head_dim = channels // heads
        self.norm = nn.GroupNorm(groups, channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(cond_dim, channels, bias=False)
        self.to_v = nn.Linear(cond_dim, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) attends to cond (B, L, cond_dim); returns (B, C, H, W)."""
        tokens = self.norm(x).flatten(2).transpose(1, 2)                               # (B, N, C)
        q = self.to_q(tokens).unflatten(2, (self.heads, self.head_dim)).transpose(1, 2)  # (B, h, N, d)
        k = self.to_k(cond) * (1.0 / math.sqrt(self.head_dim))
        k = k.unflatten(2, (self.heads, self.head_dim)).permute(0, 2, 3, 1)             # (B, h, d, L)
        v = self.to_v(cond).unflatten(2, (self.heads, self.head_dim)).transpose(1, 2)    # (B, h, L, d)
        attn = torch.softmax(torch.matmul(q, k), dim=-1)                                 # (B, h, N, L)
        o = self.to_out(torch.matmul(attn, v).transpose(1, 2).flatten(2))                # (B, N, C)
        return x + o.transpose(1, 2).reshape(x.shape)


class DownLevel(nn.Module):
    def __init__(self, level: int, levels: int, cin: int, c: int, time_dim: int, cond_dim: int, heads: int,
                 groups: int):
        super().__init__()
        self.res = ResBlock(cin, c, time_dim, groups)
        self.attn = CrossAttention(c, cond_dim, heads, groups) if level >= 1 else None
        self.downsample = nn.Conv2d(c, c, 3, stride=2, padding=1) if level + 1 < levels else None


class UpLevel(nn.Module):
    def __init__(self, level: int, levels: int, channels: List[int], time_dim: int, cond_dim: int, heads: int,
                 groups: int):
        super().__init__()
        c = channels[level]
        self.level = level
        # The bottom level continues from the encoder's output, which *is* its skip.
        self.takes_skip = level + 1 < levels
        self.res = ResBlock(2 * c if self.takes_skip else c, c, time_dim, groups)
        self.attn = CrossAttention(c, cond_dim, heads, groups) if level >= 1 else None
        self.upsample = nn.Conv2d(c, channels[level - 1], 1) if level >= 1 else None


class ToyUNet(nn.Module):
    """eps = net(x_t, t, cond): x_t (B, in_channels, S, S) float, t (B,) or a single timestep (any
    numeric dtype), cond (B, L, cond_dim). Options and defaults as the `toy_unet` plugin's."""

    def __init__(self, image_size: int = 32, in_channels: int = 3, channels=(32, 64, 64), cond_dim: int = 64,
                 heads: int = 4, norm_groups: int = 8, prediction_type: str = "epsilon"):
        super().__init__()
        channels = [int(c) for c in channels]
        validate_options(image_size, in_channels, channels, cond_dim, heads, norm_groups, prediction_type)
        self.image_size, self.in_channels, self.cond_dim = image_size, in_channels, cond_dim
        self.prediction_type = prediction_type
        levels = len(channels)
        c0 = channels[0]
        self.sinusoid_dim = c0 + c0 % 2
        time_dim = 4 * c0
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.time_linear1 = nn.Linear(self.sinusoid_dim, time_dim)
        self.time_linear2 = nn.Linear(time_dim, time_dim)
        cins = [c0] + channels[:-1]
        self.down = nn.ModuleList([DownLevel(lv, levels, cins[lv], channels[lv], time_dim, cond_dim, heads, norm_groups)
                                   for lv in range(levels)])
        self.up = nn.ModuleDict({str(lv): UpLevel(lv, levels, channels, time_dim, cond_dim, heads, norm_groups)
                                 for lv in reversed(range(levels))})
        self.norm_out = nn.GroupNorm(norm_groups, c0)
        self.conv_out = nn.Conv2d(c0, in_channels, 3, padding=1)

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.sinusoid_dim // 2
        exponent = torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half)
        args = t.to(torch.float32).reshape(-1, 1) * torch.exp(exponent).unsqueeze(0)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # cos | sin (flip_sin_to_cos)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        t = t.reshape(1).expand(b) if t.numel() == 1 else t.reshape(b)
        time_act = F.silu(self.time_linear2(F.silu(self.time_linear1(self.timestep_embedding(t)))))
        h = self.conv_in(x_t)
        skips: List[torch.Tensor] = []
        for level in self.down:
            h = level.res(h, time_act)
            if level.attn is not None:
                h = level.attn(h, cond)
            skips.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
        for level in self.up.values():  # coarsest first
            if level.takes_skip:
                h = torch.cat([h, skips[level.level]], dim=1)
            h = level.res(h, time_act)
            if level.attn is not None:
                h = level.attn(h, cond)
            if level.upsample is not None:
                h = F.interpolate(level.upsample(h), scale_factor=2.0, mode="nearest")
        return self.conv_out(F.silu(self.norm_out(h)))


def validate_options(image_size, in_channels, channels, cond_dim, heads, norm_groups, prediction_type):
    """The checks of the plugin's read_options (plugin.cpp), with its messages' content."""
    levels = len(channels)
    if not 1 <= levels <= 5:
        raise ValueError(f"toy_unet: channels: expected 1 to 5 levels, got {levels}")
    if image_size % (1 << (levels - 1)) != 0:
        raise ValueError(f"toy_unet: image_size {image_size} is not divisible by 2^(levels-1) = {1 << (levels - 1)}")
    for lv, c in enumerate(channels):
        if c % norm_groups != 0:
            raise ValueError(f"toy_unet: norm_groups {norm_groups} does not divide channels[{lv}] = {c}")
        if lv >= 1 and c % heads != 0:
            raise ValueError(f"toy_unet: heads {heads} does not divide channels[{lv}] = {c}")
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(f"toy_unet: prediction_type '{prediction_type}' is not epsilon, v_prediction or sample")
    if in_channels < 1 or cond_dim < 1:
        raise ValueError("toy_unet: in_channels and cond_dim must be positive")


# ----------------------------------------------------------------------------------------------
# safetensors with json + numpy (8-byte little-endian header length, JSON header, raw data)
# ----------------------------------------------------------------------------------------------

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}
NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
         torch.bool: "BOOL"}


def read_safetensors(path: str):
    """Returns ({name: tensor}, metadata dict). Every entry's dtype, shape and byte range is checked."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} runs past the end of the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header is not a JSON object")
    data = memoryview(blob)[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(s) for s in entry["shape"]], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor '{name}': needs dtype, shape and data_offsets [begin, end]") from None
        if dtype not in DTYPES:
            raise ValueError(f"{path}: tensor '{name}': dtype {dtype} is not one of {', '.join(DTYPES)}")
        np_dtype = np.dtype(DTYPES[dtype])
        want = math.prod(shape) * np_dtype.itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != want:
            raise ValueError(f"{path}: tensor '{name}': data_offsets [{begin}, {end}] do not hold {dtype} {shape} "
                             f"({want} bytes) within the {len(data)} data bytes")
        array = np.frombuffer(data[begin:end], dtype=np_dtype.newbyteorder("<")).astype(np_dtype).reshape(shape)
        if dtype == "BF16":  # no bfloat16 in numpy: its 16 bits are the top half of a float32
            tensor = torch.from_numpy((array.astype(np.uint32) << 16).view(np.float32)).to(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array.copy())
        tensors[name] = tensor
    return tensors, metadata


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None):
    """The inverse of read_safetensors (little-endian, names sorted, contiguous data)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = (t.to(torch.float32).numpy().view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


def load_strict(module: nn.Module, tensors: Dict[str, torch.Tensor], source: str) -> None:
    """The plugin's strict load: a missing or unexpected key, a shape mismatch or a non-float tensor for
    a float parameter raises ValueError naming the source and the key, and then nothing is copied."""
    targets = module.state_dict()
    for key, target in targets.items():
        if key not in tensors:
            raise ValueError(f"{source}: missing key '{key}' (shape {list(target.shape)})")
        got = tensors[key]
        if tuple(got.shape) != tuple(target.shape):
            raise ValueError(f"{source}: key '{key}' has shape {list(got.shape)} but the module expects "
                             f"{list(target.shape)}")
        if target.is_floating_point() and not got.is_floating_point():
            raise ValueError(f"{source}: key '{key}' is not a floating-point tensor ({got.dtype})")
    for key in tensors:
        if key not in targets:
            raise ValueError(f"{source}: unexpected key '{key}'")
    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(tensors[key])


def from_safetensors(path: str = SHIPPED, **options) -> ToyUNet:
    """A ToyUNet with the plugin's options (defaults: the shipped model's) and the file's weights."""
    net = ToyUNet(**options)
    tensors, _ = read_safetensors(path)
    load_strict(net, tensors, path)
    return net


def export_torchscript(net: ToyUNet, out: str) -> None:
    """torch.jit.script of the eager module (the same weights and code path), saved for the framework's
    `torchscript` plugin; refuses to write a file whose forward differs from the eager one."""
    scripted = torch.jit.script(net)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, net.in_channels, net.image_size, net.image_size, generator=g)
    c = torch.randn(2, 12, net.cond_dim, generator=g)
    t = torch.tensor([999, 19], dtype=torch.int64)
    with torch.no_grad():
        diff = float((scripted(x, t, c) - net(x, t, c)).abs().max())
    if diff > 1e-5:
        raise SystemExit(f"toy_unet.py: the scripted module differs from the eager one by {diff:.2e}")
    torch.jit.save(scripted, out)


# ----------------------------------------------------------------------------------------------
# --self-test: strict loading of the shipped file, shapes, the loader's refusals (seconds)
# ----------------------------------------------------------------------------------------------


def self_test(checkpoint: str) -> int:
    failures = []

    def check(name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if not ok:
            failures.append(name)

    net = ToyUNet()
    n = sum(p.numel() for p in net.parameters())
    check("parameter count with the default options", n == SHIPPED_PARAMETERS, f"{n} (README: {SHIPPED_PARAMETERS})")
    check("no buffers (as the C++ module)", len(list(net.buffers())) == 0)
    tensors, metadata = read_safetensors(checkpoint)
    check("shipped file: same keys as the module", sorted(tensors) == sorted(net.state_dict()),
          f"{len(tensors)} tensors, metadata component {metadata.get('component', '?')!r}")
    try:
        load_strict(net, tensors, checkpoint)
        check("shipped file loads strictly", all(torch.equal(p, tensors[k]) for k, p in net.state_dict().items()))
    except ValueError as e:
        check("shipped file loads strictly", False, str(e))

    def refused(name, mutate, expect):
        bad = dict(tensors)
        mutate(bad)
        fresh = ToyUNet()
        before = fresh.conv_in.weight.clone()
        try:
            load_strict(fresh, bad, "test")
            check(name, False, "accepted")
        except ValueError as e:
            check(name, expect in str(e) and torch.equal(fresh.conv_in.weight, before), str(e))

    refused("refuses a missing key", lambda d: d.pop("down.1.attn.to_q.weight"),
            "missing key 'down.1.attn.to_q.weight'")
    refused("refuses an unexpected key", lambda d: d.update({"down.0.attn.to_q.weight": torch.zeros(32, 32)}),
            "unexpected key 'down.0.attn.to_q.weight'")
    refused("refuses a shape mismatch", lambda d: d.update({"up.2.upsample.weight": torch.zeros(64, 64)}),
            "key 'up.2.upsample.weight' has shape [64, 64]")
    refused("refuses an integer tensor", lambda d: d.update({"conv_out.bias": torch.zeros(3, dtype=torch.int64)}),
            "'conv_out.bias' is not a floating-point tensor")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "round_trip.safetensors")
        mixed = {"a": torch.randn(2, 3), "b": torch.randn(5).to(torch.bfloat16), "c": torch.randn(1, 4).half(),
                 "d": torch.arange(6, dtype=torch.int64).reshape(3, 2), "e": torch.zeros(0, 3)}
        write_safetensors(path, mixed, {"note": "self-test"})
        back, meta = read_safetensors(path)
        check("write/read round trip (F32, BF16, F16, I64, empty)",
              meta == {"note": "self-test"} and all(back[k].dtype == v.dtype and torch.equal(back[k], v)
                                                    for k, v in mixed.items()))
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 4)
        try:
            read_safetensors(path)
            check("refuses a truncated file", False, "accepted")
        except ValueError as e:
            check("refuses a truncated file", "data_offsets" in str(e), str(e))

    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for b in (1, 3):
            x = torch.randn(b, 3, 32, 32, generator=g)
            out = net(x, torch.full((b,), 999, dtype=torch.int64), torch.randn(b, 12, 64, generator=g))
            check(f"output shape at batch {b}", tuple(out.shape) == (b, 3, 32, 32) and bool(torch.isfinite(out).all()),
                  str(tuple(out.shape)))
        # A single timestep serves the whole batch, as in the plugin.
        x, c = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 12, 64, generator=g)
        same = torch.equal(net(x, torch.tensor(500), c), net(x, torch.tensor([500, 500]), c))
        check("a single timestep broadcasts over the batch", same)
        # Trained weights: at t = 999 the input is nearly pure noise, so eps is close to x_t.
        x = torch.randn(8, 3, 32, 32, generator=g)
        eps = net(x, torch.full((8,), 999), torch.randn(8, 12, 64, generator=g))
        corr = float(torch.nn.functional.cosine_similarity(eps.flatten(), x.flatten(), dim=0))
        check("trained weights: eps at t = 999 follows x_t", corr > 0.9, f"cosine {corr:.4f}")
        # The scripted module (what --export writes) computes the same.
        scripted = torch.jit.script(net)
        t = torch.tensor([999, 19, 500, 0, 250, 750, 1, 998])
        diff = float((scripted(x, t, c.repeat(4, 1, 1)) - net(x, t, c.repeat(4, 1, 1))).abs().max())
        check("torch.jit.script of the module equals it", diff <= 1e-5, f"max abs diff {diff:.2e}")
    try:
        ToyUNet(heads=3)
        check("refuses heads not dividing a width", False, "accepted")
    except ValueError as e:
        check("refuses heads not dividing a width", "heads 3 does not divide channels[1] = 64" in str(e), str(e))

    if failures:
        print(f"{len(failures)} check(s) FAILED: {', '.join(failures)}")
        return 1
    print("all checks passed")
    return 0


# ----------------------------------------------------------------------------------------------
# --check: the eager module equals the C++ model (two `sdpo train` runs differing only in the model)
# ----------------------------------------------------------------------------------------------


def check_framework(binary: str, checkpoint: str, work: str, threads: int, tolerance: float) -> int:
    """Runs one epoch of `sdpo train` on experiments/toy/quickstart.json twice with the same seed: model
    `toy_unet` on the checkpoint, then `torchscript` on this module scripted with the same weights.
    Everything else (text encoder, prompts, noise, sampler) is the same, so the sampled trajectories
    (written to run.h5 with output.save_latents) must agree to float rounding. Compares the latents
    (each step's input x_t), the predicted x0, the model outputs eps recovered from the two, and the
    log-probs."""
    import h5py

    os.makedirs(work, exist_ok=True)
    pt = os.path.join(work, "toy_unet.pt")
    export_torchscript(from_safetensors(checkpoint), pt)
    with open(os.path.join(ROOT, "experiments", "toy", "quickstart.json")) as f:
        base = json.load(f)
    base["text_encoder"]["options"]["checkpoint"] = os.path.join(ROOT, "experiments", "assets",
                                                                 "toy_text.safetensors")
    base["train"].update({"epochs": 1, "batch_size": 4, "train_batch_size": 4, "checkpoint_every": 1000})
    base["eval"]["every"] = 0
    base["output"].update({"save_trajectories": True, "save_latents": True, "progress": False})
    models = {"toy_unet": {"name": "toy_unet", "options": {"checkpoint": os.path.abspath(checkpoint)}},
              "torchscript": {"name": "torchscript", "options": {"file": pt, "prediction_type": "epsilon",
                                                                  "latent_shape": [3, 32, 32]}}}
    arrays = {}
    for name, model in models.items():
        m = dict(base, name=f"toy_unet_check_{name}", model=model)
        path = os.path.join(work, f"manifest_{name}.json")
        with open(path, "w") as f:
            json.dump(m, f, indent=2)
        out = os.path.join(work, name)
        shutil.rmtree(out, ignore_errors=True)
        cmd = [binary, "train", path, "--output", out, "--threads", str(threads)]
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        if p.returncode != 0:
            sys.stderr.write(p.stdout)
            raise SystemExit(f"toy_unet.py: sdpo train failed ({p.returncode})")
        with h5py.File(os.path.join(out, "run.h5"), "r") as h:
            g = h["trajectories/epoch_1"]
            arrays[name] = {k: g[k][()] for k in g if k != "prompts"}
            arrays[name]["prompts"] = [s.decode() if isinstance(s, bytes) else str(s) for s in g["prompts"][()]]
    a, b = arrays["toy_unet"], arrays["torchscript"]
    if a["prompts"] != b["prompts"] or not np.array_equal(a["timesteps"], b["timesteps"]):
        print("FAIL: the two runs sampled different prompts or timesteps")
        return 1
    print(f"trajectories: {a['latents'].shape[0]} x {a['latents'].shape[1]} latents of {a['latents'].shape[2:]}, "
          f"timesteps {a['timesteps'][0].tolist()}")

    # eps from the DDIM identity pred_x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).
    sys.path.insert(0, HERE)
    import peer  # noqa: E402
    abar = peer.alphas_cumprod().double().numpy()

    def eps(run):
        x, x0 = run["latents"].astype(np.float64), run["pred_x0"].astype(np.float64)  # x_t of each step
        ab = abar[run["timesteps"]].reshape(run["timesteps"].shape + (1,) * (x.ndim - 2))
        return (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)

    rows = [("latents (the model inputs x_t)", a["latents"], b["latents"]),
            ("pred_x0", a["pred_x0"], b["pred_x0"]),
            ("eps (model output, from x_t and pred_x0)", eps(a), eps(b)),
            ("eps at step 0 (identical inputs)", eps(a)[:, 0], eps(b)[:, 0]),
            ("log_probs", a["log_probs"], b["log_probs"])]
    diffs = {}
    for label, x, y in rows:
        diffs[label] = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())
        print(f"{label:44s} max abs diff {diffs[label]:.3e} (values up to {np.abs(x).max():.3g})")
    # Judged on the model outputs: pred_x0 scales eps by up to sqrt(1 - abar) / sqrt(abar) = 15 at
    # t = 999. A GroupNorm eps of 1e-6 instead of 1e-5 alone moves eps by about 5e-5.
    worst = diffs["eps (model output, from x_t and pred_x0)"]
    ok = worst <= tolerance
    print(f"{'ok' if ok else 'FAIL'}: max abs diff of the model outputs {worst:.3e} (tolerance {tolerance:g})")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--self-test", action="store_true", help="strict load of the checkpoint, shapes, refusals")
    mode.add_argument("--export", metavar="OUT.pt", help="write torch.jit.script of the module with the weights")
    mode.add_argument("--check", action="store_true", help="compare with the C++ model through two sdpo train runs")
    mode.add_argument("--time", action="store_true", help="time the bare calls of the eager module")
    ap.add_argument("--checkpoint", default=SHIPPED, help="safetensors weights (default: the shipped toy_unet)")
    ap.add_argument("--sdpo", default=os.path.join(ROOT, "build", "bin", "sdpo"), help="the sdpo binary (--check)")
    ap.add_argument("--workdir", help="--check: where the runs go (default: a temporary folder, removed)")
    ap.add_argument("--tolerance", type=float, default=2e-5, help="--check: largest max abs diff of eps accepted")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (--check, --time)")
    a = ap.parse_args()
    if a.self_test:
        return self_test(a.checkpoint)
    if a.export:
        export_torchscript(from_safetensors(a.checkpoint), a.export)
        print(f"toy_unet: wrote {a.export} (torch.jit.script of the eager module, weights {a.checkpoint})")
        return 0
    if a.check:
        if not os.path.exists(a.sdpo):
            raise SystemExit(f"toy_unet.py: {a.sdpo} does not exist (build the framework first)")
        work = a.workdir or tempfile.mkdtemp(prefix="sdpo_toy_unet_check_")
        try:
            return check_framework(a.sdpo, a.checkpoint, work, a.threads, a.tolerance)
        finally:
            if not a.workdir:
                shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, HERE)
    import toy_policy  # noqa: E402  (its time_calls times any module with forward(x_t, t, cond))
    toy_policy.time_calls(from_safetensors(a.checkpoint), a.threads, 64)
    return 0


if __name__ == "__main__":
    sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
    sys.exit(main())
