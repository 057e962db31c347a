"""results/alignment/{model}/: what the essay's input-finding methods found for one model.

profiles.safetensors   {hook: float32 [V, width]}: every feature's activation on every token alone,
                       for every layer and the embedding
methods.json           {"model", "kind", "features", "random_features" (those of features drawn at
                       random), "hooks": {hook: {method: tokens found}}, "seconds"}
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from lmfeatures.io import read_json, read_safetensors, write_json


def write_inputs(folder: str | Path, profiles: dict[str, torch.Tensor], methods: dict) -> None:
    save_file({h: p.contiguous() for h, p in profiles.items()}, str(Path(folder) / "profiles.safetensors"))
    write_json(Path(folder) / "methods.json", methods)


def load_profiles(folder: str | Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(folder) / "profiles.safetensors")


def load_methods(folder: str | Path) -> dict:
    return read_json(Path(folder) / "methods.json")
