import time

import pytest
import torch
from micro import micro_model

from lmfeatures.io import read_json
from lmfeatures.lm.architectures import ArchitectureError
from lmfeatures.lm.models import ModelUnavailable, check_hub_source
from lmfeatures.stages.models import hub_model
from lmfeatures.store.models import load_model


@pytest.fixture
def local_gpt2(tmp_path, small_tokenizer):
    """A micro GPT-2 saved like a downloaded hub model (save_pretrained + tokenizer)."""
    model = micro_model("gpt2", vocab_size=len(small_tokenizer))
    path = tmp_path / "my-gpt2"
    model.save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path, model


def test_local_path_model_goes_through_the_hub_stage(tmp_path, local_gpt2, small_corpus):
    path, original = local_gpt2
    corpus_dir = tmp_path / "corpus"
    small_corpus[0].save_to_disk(str(corpus_dir))
    out = tmp_path / "results" / "models" / "mine"
    entry = {"name": "mine", "source": str(path), "dtype": "float32"}
    training = {"context_length": 32, "eval_tokens": 500}
    hub_model(
        corpus_dir=str(corpus_dir),
        out_dir=str(out),
        entry=entry,
        entry_key="models[0]",
        training=training,
        config={},
        seed=0,
        device="cpu",
    )
    record = read_json(out / "eval.json")
    assert record["architecture"] == "gpt2" and record["n_layers"] == 3 and record["heldout_loss"] > 0
    assert (out / "provenance.json").is_file()
    model, tok = load_model(out)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.allclose(model(ids).logits, original(ids).logits, atol=1e-5)
    assert not list(out.parent.glob(".*partial"))


def test_unknown_hub_id_offline_fails_at_once_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelUnavailable) as info:
        check_hub_source("pythia", "EleutherAI/pythia-70m")
    message = str(info.value)
    assert time.perf_counter() - start < 5
    for needle in ("'pythia'", "EleutherAI/pythia-70m", "local directory", "HF_HOME", "network"):
        assert needle in message


def test_local_path_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailable, match="has no config.json"):
        check_hub_source("mine", str(tmp_path / "nothing"))
    with pytest.raises(ModelUnavailable, match="run the DAG"):
        load_model(tmp_path / "nothing")


@pytest.mark.parametrize(("key", "path"), [("mlp_out", "mlp.up_proj"), ("mlp_act", "mlp.down_proj")])
def test_a_wrong_module_path_stops_the_hub_stage_before_anything_is_saved(
    tmp_path, small_corpus, small_tokenizer, key, path
):
    """Both overrides once gave a scan of the wrong tensors: up_proj's input (the normed residual)
    saved as 32 "MLP neurons" of a 48-wide MLP, or mlp_pre.L silently the post-activation."""
    micro_model("qwen3", vocab_size=len(small_tokenizer)).save_pretrained(tmp_path / "qwen3")
    small_tokenizer.save_pretrained(tmp_path / "qwen3")
    corpus_dir = tmp_path / "corpus"
    small_corpus[0].save_to_disk(str(corpus_dir))
    out = tmp_path / "results" / "models" / "q"
    entry = {"name": "q", "source": str(tmp_path / "qwen3"), "module_paths": {key: path}}
    with pytest.raises(ArchitectureError, match=rf"^config key 'models\[2\]\.module_paths\.{key}' \(q\): .*{path}"):
        hub_model(
            corpus_dir=str(corpus_dir),
            out_dir=str(out),
            entry=entry,
            entry_key="models[2]",
            training={"context_length": 32, "eval_tokens": 500},
            config={},
            seed=0,
            device="cpu",
        )
    assert not out.parent.exists() or not any(out.parent.iterdir())
