#!/usr/bin/env python3
"""Converts a PyTorch state-dict pickle to safetensors for the `aesthetic` reward (documentation;
the C++ side and its tests never run Python).

    python3 convert_head.py sac+logos+ava1-l14-linearMSE.pth aesthetic_head.safetensors
    python3 convert_head.py clip-vit-large-patch14/pytorch_model.bin clip-vit-large-patch14/model.safetensors

The first converts the LAION aesthetic head (keys layers.{0,2,4,6,7}.{weight,bias}); its storages
are tagged cuda:0, hence map_location. The second is only needed when the CLIP folder has no
model.safetensors. Needs torch and safetensors (pip install torch safetensors).
"""
import sys

import torch
from safetensors.torch import save_file

src, dst = sys.argv[1], sys.argv[2]
state = torch.load(src, map_location="cpu")
tensors = {k: v.detach().contiguous() for k, v in state.items() if torch.is_tensor(v)}
save_file(tensors, dst, metadata={"format": "pt"})
print(f"{dst}: {len(tensors)} tensors")
