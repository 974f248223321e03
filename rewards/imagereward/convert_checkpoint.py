#!/usr/bin/env python3
"""Converts ImageReward's checkpoint to safetensors for the `imagereward` reward (documentation;
the C++ side and its tests never run Python).

    python3 convert_checkpoint.py ImageReward.pt <folder>/ImageReward.safetensors

ImageReward.pt (Hugging Face repo THUDM/ImageReward) is the state dict of ImageReward's module
(attributes `blip` and `mlp`), which ImageReward loads with strict=False. The tensors are written
unchanged, with their published names (blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*)
and stored dtype; the reward skips the ones its score never reads (blip.vision_proj.*,
blip.text_proj.*, blip.text_encoder.embeddings.position_ids) and refuses any other unknown name.
A checkpoint wrapped in a dict under 'state_dict' or 'model' is unwrapped, and a DataParallel
'module.' prefix is removed. Needs torch and safetensors (pip install torch safetensors).
"""
import sys

import torch
from safetensors.torch import save_file

src, dst = sys.argv[1], sys.argv[2]
# weights_only (torch >= 1.13) refuses arbitrary pickled objects; this trusted file could also be
# loaded with weights_only=False should torch refuse something in it.
state = torch.load(src, map_location="cpu", weights_only=True)
for wrapper in ("state_dict", "model"):
    if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
        state = state[wrapper]
tensors = {}
for key, value in state.items():
    if torch.is_tensor(value):
        name = key[len("module."):] if key.startswith("module.") else key
        tensors[name] = value.detach().contiguous()
save_file(tensors, dst, metadata={"format": "pt"})
used = sum(1 for k in tensors if k.startswith(("blip.visual_encoder.", "blip.text_encoder.encoder.",
                                               "blip.text_encoder.embeddings.", "mlp.layers."))
           and k != "blip.text_encoder.embeddings.position_ids")
print(f"{dst}: {len(tensors)} tensors, {used} read by the score (620 expected)")
