#!/usr/bin/env python3
"""Converts HPSv2's checkpoint to safetensors for the `hpsv2` reward (documentation; the C++ side
and its tests never run Python).

    python3 convert_checkpoint.py HPS_v2_compressed.pt hpsv2.safetensors

HPS_v2_compressed.pt (Hugging Face repo xswu/HPSv2; HPS_v2.1_compressed.pt for v2.1) is a dict
whose 'state_dict' entry is the open_clip ViT-H-14 state dict that HPSv2 loads strictly. The
tensors are written unchanged: open_clip key names, their stored dtype. The reward maps the names
to transformers' CLIPModel names itself. Needs torch and safetensors (pip install torch safetensors).
"""
import sys

import torch
from safetensors.torch import save_file

src, dst = sys.argv[1], sys.argv[2]
checkpoint = torch.load(src, map_location="cpu", weights_only=True)
state = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
tensors = {k: v.detach().contiguous() for k, v in state.items() if torch.is_tensor(v)}
save_file(tensors, dst, metadata={"format": "pt"})
print(f"{dst}: {len(tensors)} tensors (686 for ViT-H-14)")
