"""results/scans/{model}/: a saved scan, written by write_scan and read by load_scan.

scan.safetensors     every hook's fields ("{hook}.{field}", e.g. "mlp.2.top_values" [k, d_mlp])
windows.safetensors  the windows: doc, start, valid_from [windows], ids [windows, context]
meta.json            model, model fingerprint, shapes, scan config, hooks, document ids
{hook}.winmax.npy    float16 [windows, units]: each window's max activation (memory-mapped)

results/scan-shards/{model}/{shard}/: one job's part of a sharded scan (scan.shards), written by
write_scan_part and read by load_scan_part: part.safetensors (the statistics, see ScanPart),
windows.safetensors and {hook}.winmax.npy of its windows only, meta.json (the scan's meta, start, stop).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from lmfeatures.io import atomic_path, read_json, read_safetensors, write_json
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.scan.scan import ScanConfig, ScanError, ScanPart, Windows, hook_names
from lmfeatures.store.models import fingerprint

SCAN_FORMAT = 1


def scan_meta(
    model_name: str,
    model_dir: str | Path,
    model: HookedModel,
    cfg: ScanConfig,
    windows: Windows,
    doc_ids: list[str],
    derived: list[str] = (),
) -> dict:
    return {
        "format": SCAN_FORMAT,
        "model": model_name,
        "model_fingerprint": fingerprint(model_dir),
        "architecture": model.model_type,
        "n_layers": model.n_layers,
        "d_mlp": model.d_mlp,
        "d_model": model.d_model,
        "scan_config": asdict(cfg),
        "hooks": hook_names(model, cfg.kinds) + list(derived),
        "n_windows": len(windows.doc),
        "skipped_short_docs": windows.skipped_short_docs,
        "doc_ids": doc_ids,
    }


@dataclass
class Scan:
    """A loaded scan; read a hook's field with `tensor`, e.g. scan.tensor("mlp.2", "top_values") [k, d_mlp]."""

    meta: dict
    tensors: dict[str, torch.Tensor]
    windows: Windows
    path: Path

    def tensor(self, hook: str, field: str) -> torch.Tensor:
        """One field of one hook, e.g. scan.tensor("mlp.2", "top_values") [k, d_mlp]; fields: top_values,
        top_window, top_pos, max, min, mean, var, skew, kurtosis, density, density_above_threshold,
        hist, bin_width, interval_window, interval_share, random_values."""
        return self.tensors[f"{hook}.{field}"]

    @property
    def random_windows(self) -> torch.Tensor:
        """int64 [n_random] the windows drawn at random (the same for every unit)."""
        return self.tensors["random_window"]

    def window_max_table(self, hook: str) -> np.ndarray:
        """[windows, units] float16 memmap of each window's max activation."""
        return np.load(self.path / f"{hook}.winmax.npy", mmap_mode="r")

    def check_unit(self, hook: str, unit: int) -> None:
        if hook not in self.meta["hooks"]:
            raise ScanError(f"hook {hook!r} is not in the scan of {self.meta['model']} (hooks: {self.meta['hooks']})")
        n = self.tensor(hook, "max").shape[0]
        if not 0 <= unit < n:
            raise ScanError(f"unit {unit} is out of range for {hook} of {self.meta['model']} (0-{n - 1})")


def load_scan(path: str | Path, model_dir: str | Path | None = None, expect: dict | None = None) -> Scan:
    """Load a scan; with `model_dir` / `expect` (scan config fields), refuse one that does not match."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise ScanError(f"no complete scan at {str(path)!r}: run the scan rule (snakemake) first")
    meta = read_json(path / "meta.json")
    if meta.get("format") != SCAN_FORMAT:
        raise ScanError(f"scan at {str(path)!r} has format {meta.get('format')}, expected {SCAN_FORMAT}: rerun it")
    if model_dir is not None and meta["model_fingerprint"] != fingerprint(model_dir):
        raise ScanError(
            f"scan at {str(path)!r} was made from a different model than {str(model_dir)!r}: rerun the scan"
        )
    for key, value in (expect or {}).items():
        if meta["scan_config"].get(key) != value:
            raise ScanError(
                f"scan at {str(path)!r} has {key}={meta['scan_config'].get(key)!r}, expected {value!r}: rerun the scan"
            )
    windows = _load_windows(path / "windows.safetensors", meta["skipped_short_docs"])
    return Scan(meta=meta, tensors=read_safetensors(path / "scan.safetensors"), windows=windows, path=path)


def write_scan(
    out_dir: str | Path, result: dict, windows: Windows, meta: dict, window_max: dict[str, np.ndarray]
) -> None:
    """The folder load_scan reads: scan.safetensors, windows.safetensors, meta.json, {hook}.winmax.npy."""
    with atomic_path(out_dir, directory=True) as tmp:
        save_file({k: v.contiguous() for k, v in result.items()}, str(tmp / "scan.safetensors"))
        _save_windows(tmp / "windows.safetensors", windows)
        for hook, table in window_max.items():
            np.save(tmp / f"{hook}.winmax.npy", table)
        write_json(tmp / "meta.json", {**meta, "n_tokens": int(result["n_tokens"])})


def _save_windows(path: Path, windows: Windows) -> None:
    ws = {"doc": windows.doc, "start": windows.start, "valid_from": windows.valid_from, "ids": windows.ids}
    save_file({k: v.contiguous() for k, v in ws.items()}, str(path))


def _load_windows(path: Path, skipped_short_docs: int) -> Windows:
    w = read_safetensors(path)
    return Windows(w["doc"], w["start"], w["valid_from"], w["ids"], skipped_short_docs)


def write_scan_part(
    out_dir: str | Path, part: ScanPart, windows: Windows, meta: dict, window_max: dict[str, np.ndarray]
) -> None:
    """One shard's folder (see the module doc): `windows` and `window_max` cover the part's windows only."""
    with atomic_path(out_dir, directory=True) as tmp:
        save_file({k: v.contiguous() for k, v in part.tensors().items()}, str(tmp / "part.safetensors"))
        _save_windows(tmp / "windows.safetensors", windows)
        for hook, table in window_max.items():
            np.save(tmp / f"{hook}.winmax.npy", table)
        write_json(tmp / "meta.json", {**meta, "start": part.start, "stop": part.stop})


def load_scan_part(path: str | Path) -> tuple[ScanPart, Windows, dict]:
    """(the part's statistics, its windows, the scan's meta); tables through `part_window_max`."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise ScanError(f"no complete scan shard at {str(path)!r}: run the scan_shard rule (snakemake) first")
    meta = read_json(path / "meta.json")
    start, stop = meta.pop("start"), meta.pop("stop")
    part = ScanPart.from_tensors(read_safetensors(path / "part.safetensors"), start, stop)
    return part, _load_windows(path / "windows.safetensors", meta["skipped_short_docs"]), meta


def part_window_max(path: str | Path, hook: str) -> np.ndarray:
    """A shard's window-max table of `hook`, float16 [its windows, units], memory-mapped."""
    return np.load(Path(path) / f"{hook}.winmax.npy", mmap_mode="r")


def window_max_memmap(folder: str | Path, hook: str, shape: tuple[int, int]) -> np.ndarray:
    """A hook's window-max table as the scan streams it: a float16 memmap [windows, units] in `folder`
    (RAM stays bounded on large corpora), which write_scan then saves into the scan folder."""
    return np.lib.format.open_memmap(Path(folder) / f"{hook}.winmax.npy", "w+", np.float16, shape)
