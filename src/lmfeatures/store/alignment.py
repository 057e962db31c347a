"""results/alignment/{model}/: what the essay's input-finding methods found for one model.

profiles.safetensors   {hook: float32 [V, width]}: every feature's activation on every token alone,
                       for every layer and the embedding; read back a hook at a time (`Profiles`)
methods.json           {"model", "kind", "features", "random_features" (those of features drawn at
                       random), "hooks": {hook: {method: tokens found}}, "seconds"}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmfeatures.io import read_json, reading, write_json


def write_inputs(folder: str | Path, profiles: dict[str, torch.Tensor], methods: dict) -> None:
    save_file({h: p.contiguous() for h, p in profiles.items()}, str(Path(folder) / "profiles.safetensors"))
    write_json(Path(folder) / "methods.json", methods)


class Profiles(Mapping[str, torch.Tensor]):
    """profiles.safetensors as {hook: [V, width]}, each hook read from the file when indexed and
    not kept: a model's profiles are (layers + 1) x V x width floats, and the alignment metrics
    need a few hooks of them at a time, never every model's at once. DamagedFileError if the file
    cannot be read."""

    def __init__(self, path: Path):
        self.path = path
        with reading(path), safe_open(str(path), framework="pt") as f:
            self._hooks = list(f.keys())

    def __getitem__(self, hook: str) -> torch.Tensor:
        if hook not in self._hooks:
            raise KeyError(hook)
        with reading(self.path), safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(hook)

    def __contains__(self, hook: object) -> bool:  # Mapping's default would read the tensor
        return hook in self._hooks

    def __iter__(self) -> Iterator[str]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)


def load_profiles(folder: str | Path) -> Profiles:
    return Profiles(Path(folder) / "profiles.safetensors")


def load_methods(folder: str | Path) -> dict:
    return read_json(Path(folder) / "methods.json")
