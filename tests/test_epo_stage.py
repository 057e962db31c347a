"""The EPO stage: resume after a kill, checkpoints of another model ignored, a separate fluency model."""

import json
import shutil

import pandas as pd
import pytest
import torch
from micro import micro_model

from lmfeatures.epo.epo import Scorer, UnitTarget, xent
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.stages import epo as stage

PARAMS = {
    "n_tokens": 4,
    "population": 3,
    "children": 4,
    "top_k": 8,
    "iterations": 30,
    "restart_every": 10,
    "checkpoint_every": 25,
}


def _save(path, small_tokenizer, seed):
    micro_model("gpt_neox", seed=seed, vocab_size=len(small_tokenizer)).save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return str(path)


def _run(model_dir, out_dir):
    stage.epo_run(
        model_dir=model_dir,
        fluency=[],
        out_dir=str(out_dir),
        neuron="L1N3",
        method="epo",
        seed="0",
        epo_params={**PARAMS, "batch_size": 64},
        config={},
        device="cpu",
    )


def _result(out_dir):
    frontier = json.loads((out_dir / "frontier.json").read_text())
    history = pd.read_parquet(out_dir / "history.parquet").drop(columns=["seconds"])
    return frontier, history


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, small_tokenizer, monkeypatch, capsys):
    model_a = _save(tmp_path / "a", small_tokenizer, seed=0)
    model_b = _save(tmp_path / "b", small_tokenizer, seed=1)
    _run(model_a, tmp_path / "full-a")
    _run(model_b, tmp_path / "full-b")
    real_save = stage.save_checkpoint

    def save_then_die(obj, path):  # the scheduler kills the job right after its first checkpoint
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(model_a, tmp_path / "killed")
    monkeypatch.undo()
    checkpoint = tmp_path / ".killed.checkpoint.pt"
    assert checkpoint.is_file() and not (tmp_path / "killed").exists()
    assert torch.load(checkpoint, weights_only=False)["state"].iteration == 25
    capsys.readouterr()
    _run(model_a, tmp_path / "killed")
    assert "at iteration 25" in capsys.readouterr().err
    (fa, ha), (fk, hk) = _result(tmp_path / "full-a"), _result(tmp_path / "killed")
    assert fa == fk and ha.equals(hk)
    # kept at the last iteration until epo_compare reads the run: a run whose finished output
    # Snakemake rejects (Ctrl-C flags the jobs it let finish as incomplete) resumes at its end
    assert torch.load(checkpoint, weights_only=False)["state"].iteration == PARAMS["iterations"]
    shutil.rmtree(tmp_path / "killed")
    _run(model_a, tmp_path / "killed")
    assert f"at iteration {PARAMS['iterations']}" in capsys.readouterr().err
    assert _result(tmp_path / "killed")[0] == fa and _result(tmp_path / "killed")[1].equals(ha)
    # a checkpoint of model a is not resumed for model b
    monkeypatch.setattr(stage, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(model_a, tmp_path / "other")
    monkeypatch.undo()
    _run(model_b, tmp_path / "other")
    assert "ignoring checkpoint" in capsys.readouterr().err
    (fb, hb), (fo, ho) = _result(tmp_path / "full-b"), _result(tmp_path / "other")
    assert fb == fo and hb.equals(ho)
    # a checkpoint cut short (a job killed while writing one elsewhere) is ignored, not fatal
    (tmp_path / ".torn.checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole file")
    _run(model_b, tmp_path / "torn")
    assert "cannot be read" in capsys.readouterr().err and _result(tmp_path / "torn")[0] == fb


def test_a_separate_fluency_model_scores_xent():
    model, fluency = HookedModel(micro_model("gpt_neox", seed=0)), HookedModel(micro_model("llama", seed=3))
    ids = torch.tensor([[5, 9, 2, 7], [1, 1, 3, 3]])
    t, x = Scorer(model, UnitTarget("mlp.1", 3), fluency, batch_size=8).score(ids)
    alone_t, alone_x = Scorer(model, UnitTarget("mlp.1", 3), batch_size=8).score(ids)
    with torch.no_grad():
        assert torch.allclose(x, xent(fluency.model(ids).logits, ids), atol=1e-5)
        assert torch.allclose(t, alone_t) and not torch.allclose(x, alone_x)
    t2, x2, g_t, g_x = Scorer(model, UnitTarget("mlp.1", 3), fluency, batch_size=8).gradients(ids)
    assert torch.allclose(t2, t, atol=1e-5) and torch.allclose(x2, x, atol=1e-5) and g_x.shape == g_t.shape
