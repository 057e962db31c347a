"""A results file that is truncated or overwritten is named, with the folder to rebuild, instead of
a parser's error deep in a traceback."""

import json

import pandas as pd
import pytest
import torch
from micro import micro_model
from safetensors.torch import save_file

from lmfeatures.io import DamagedFileError, read_json, read_parquet, read_safetensors
from lmfeatures.store.models import load_model


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_model_is_named_with_the_folder_to_rebuild(tmp_path, small_tokenizer):
    folder = tmp_path / "results" / "models" / "m"
    micro_model("gpt2", vocab_size=len(small_tokenizer)).save_pretrained(folder)
    small_tokenizer.save_pretrained(folder)
    truncate(folder / "model.safetensors")
    with pytest.raises(DamagedFileError) as raised:
        load_model(folder)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'model.safetensors'} is damaged (SafetensorError: ")
    assert f"delete {folder} and rebuild it with `snakemake --cores 2 {folder}`" in message


@pytest.mark.parametrize("kind", ["safetensors", "json", "parquet"])
def test_every_results_format_names_a_damaged_file(tmp_path, kind):
    path = tmp_path / "scans" / "m" / f"file.{kind}"
    path.parent.mkdir(parents=True)
    writers = {
        "safetensors": lambda: save_file({"x": torch.arange(1000.0)}, str(path)),
        "json": lambda: path.write_text(json.dumps({"values": list(range(100))})),
        "parquet": lambda: pd.DataFrame({"x": range(1000)}).to_parquet(path),
    }
    readers = {"safetensors": read_safetensors, "json": read_json, "parquet": read_parquet}
    writers[kind]()
    readers[kind](path)  # whole: reads
    truncate(path)
    with pytest.raises(DamagedFileError, match=rf"^{path} is damaged \(.*\): delete {path.parent} and rebuild it"):
        readers[kind](path)
