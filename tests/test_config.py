import copy
import re

import pytest
import yaml

from lmfeatures.config import ConfigError, load_config, model_entry, validate_config

BASE = yaml.safe_load(open("config/config.yaml"))


def _check(mutate):
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    return validate_config(cfg)


def test_default_and_test_configs_validate_and_fill_defaults():
    cfg = load_config("config/config.yaml")
    assert cfg["training"]["eval_tokens"] == 200000  # schema default
    assert cfg["results"] == "results"
    assert model_entry(cfg, "neox-s-untrained")["twin_of"] == "neox-s"
    test = load_config("config/test.yaml")
    assert len(test["models"]) >= 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["training"].update(stpes=3), "'training.stpes': unknown key"),
        (lambda c: c["training"].update(steps="many"), "'training.steps': 'many' is not of type 'integer'"),
        (lambda c: c["models"][0].update(sorce="train"), "'models[0].sorce': unknown key"),
        (lambda c: c.update(devcie="cpu"), "'devcie': unknown key"),
        (lambda c: c["models"][3].update(twin_of="nope"), "'models[3].twin_of'"),
        (lambda c: c["models"].append(dict(c["models"][0])), "appears more than once"),
        (lambda c: c["models"][0].pop("d_mlp"), "source train needs d_mlp"),
        (lambda c: c["models"].append({"name": "g", "source": "gpt2", "n_layers": 2}), "size fields"),
        (lambda c: c["tokenizer"].update(vocab_size=10), "'tokenizer.vocab_size'"),
        (lambda c: c.update(seed=-1), "'seed': -1 is less than the minimum of 0"),
        (lambda c: c["epo"].update(seeds=[0, -2]), "'epo.seeds[1]'"),
        (
            lambda c: c["neurons"].update(explicit=["2.5"]),
            "'neurons.explicit[0]': neuron 2.5: layer 2 is out of range for model neox-s (2 layers, 0-1)",
        ),
        (
            lambda c: c["neurons"].update(explicit=["0.300"]),
            "'neurons.explicit[0]': neuron 0.300: index 300 is out of range for model neox-s (256 neurons",
        ),
        (
            lambda c: c["epo"]["neurons"].update(explicit=["3.600"]),
            "'epo.neurons.explicit[0]': neuron 3.600: index 600",
        ),
        (lambda c: c["epo"]["neurons"].update(layers=[1, 4]), "'epo.neurons.layers[1]': layer 4 is out of range"),
        (lambda c: c["epo"].update(top_k=5000), "'epo.top_k': 5000 is not below the vocabulary of model neox-m"),
        (lambda c: c.update(device="cuda:1"), "'device': 'cuda:1', but CUDA is not available"),
        (lambda c: c["epo"].update(models=["neox-xl"]), "'epo.models[0]': no model named 'neox-xl'"),
        (lambda c: c["prune"].update(models=["neox-m", "nope"]), "'prune.models[1]': no model named 'nope'"),
        (lambda c: c["prune"].update(neurons={"layers": [4]}), "'prune.neurons.layers[0]': layer 4 is out of range"),
        (lambda c: c["prune"].update(positive_share=0.2), "'prune': negative_share=0.3 must be between"),
        (
            lambda c: c["prune"].update(proposer="./no-such-bert"),
            "'prune.proposer': './no-such-bert' is neither a directory with a saved fill-mask model nor a hub id",
        ),
        (lambda c: c["prune"].update(proposer="no-org/no-such-bert"), "in the local cache (nothing is downloaded"),
        (lambda c: c.update(alignment={"models": ["neox-q"]}), "'alignment.models[0]': no model named 'neox-q'"),
        (
            lambda c: (c["models"][0].update(n_layers=1), c.update(alignment={"models": ["neox-s"]})),
            "'alignment.models': every listed model has one layer",
        ),
        (
            lambda c: c.update(alignment={"models": ["neox-s"], "features": [0, 64]}),
            "'alignment.features[1]': feature 64 is out of range for resid.L of model neox-s (64 dimensions, 0-63)",
        ),
        (
            lambda c: c.update(alignment={"models": ["neox-m"], "greedy_tokens": 129}),
            "'alignment.greedy_tokens': 129 tokens do not fit the context of model neox-m (128 positions)",
        ),
        (
            lambda c: c.update(alignment={"methods": ["greedy", "annealing"]}),
            "'alignment.methods[1]': 'annealing' is not one of ['greedy', 'gradient', 'isolated', 'relaxed']",
        ),
        (
            lambda c: (
                c["models"].append({"name": "p70", "source": "EleutherAI/pythia-70m"}),
                c.update(alignment={"sizes": ["neox-s", "p70"]}),
            ),
            "'alignment.sizes': these models do not share a tokenizer",
        ),
        (lambda c: c["sae"].update(model="neox-q"), "'sae.model': no model named 'neox-q'"),
        (lambda c: c["sae"].update(layer=2), "'sae.layer': layer 2 is outside neox-s (2 layers, 0-1)"),
        (lambda c: c["sae"].update(layer=0), "'sae.layer': mlp.0 of neox-s reads the current token alone"),
        (lambda c: c["sae"].update(k=2048), "'sae.k': 2048 must be below d_sae = expansion x d_mlp = 2048"),
        (lambda c: c["sae"].update(expansion=0), "'sae.expansion': 0 is less than the minimum of 1"),
        (lambda c: c["sae"].update(seeds=[0]), "'sae.seeds'"),
        (lambda c: c["sae"].update(contrls=[]), "'sae.contrls': unknown key"),
        (
            lambda c: c["sae"].update(proxies=["for", "@keyword"]),
            "'sae.proxies': proxy '@keyword' is not a known class",
        ),
        (lambda c: c["sae"].update(thresholds={"universality": 2}), "'sae.thresholds.universality'"),
        (lambda c: c["sae"].update(thresholds={"not_a_neuron": 0.5}), "'sae.thresholds.not_a_neuron': unknown key"),
        (
            lambda c: c["sae"].update(planted={"expansion": 1, "directions": 300}),
            "'sae.planted.expansion': the planted SAEs' d_sae = 256 (expansion x d_mlp) must exceed",
        ),
        (
            lambda c: (
                [c["models"].pop(3)] + [c[s]["models"].remove("neox-s-untrained") for s in ("alignment", "prune")]
            ),
            "'sae.controls': 'untrained' needs an untrained twin of neox-s",
        ),
    ],
)
def test_bad_config_names_the_key(mutate, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _check(mutate)


def test_a_context_free_sae_layer_is_allowed_when_asked_for_or_when_the_blocks_are_sequential():
    _check(lambda c: c["sae"].update(layer=0, allow_context_free=True))
    _check(lambda c: (c["sae"].update(layer=0), [m.update(architecture="gpt2") for m in c["models"][:3]]))


def test_sae_runs_of_the_default_config():
    from lmfeatures.config import sae_runs

    runs = sae_runs(load_config("config/config.yaml"))
    assert runs == [
        ("neox-s", "A"),
        ("neox-s", "B"),
        ("neox-s", "relu-A"),
        ("neox-s", "random-A"),
        ("neox-s", "random-B"),
        ("neox-s-untrained", "A"),
        ("neox-s-untrained", "B"),
    ]
    assert sae_runs(load_config("config/test.yaml")) == [("micro-a", "A"), ("micro-a", "B")]


def test_error_is_one_line():
    with pytest.raises(ConfigError) as info:
        _check(lambda c: c["corpus"].update(heldout_fraction=2))
    assert "\n" not in str(info.value) and "corpus.heldout_fraction" in str(info.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("config/nope.yaml")


def test_stage_neuron_overrides_merge_over_the_shared_selection():
    from lmfeatures.config import neuron_spec

    cfg = load_config("config/config.yaml")
    epo = neuron_spec(cfg, "epo")
    assert epo["layers"] == [1, 3] and epo["top_per_layer"] == 1 and epo["explicit"] == cfg["neurons"]["explicit"]
    assert neuron_spec(cfg) == cfg["neurons"] and cfg["neurons"]["top_per_layer"] == 3  # schema defaults
    with pytest.raises(ConfigError, match=r"'epo.neurons.top_per_layr': unknown key"):
        _check(lambda c: c["epo"]["neurons"].update(top_per_layr=2))


def test_epo_settings_are_checked_at_validation():
    with pytest.raises(ConfigError, match="config key 'epo': epo lambda range"):
        _check(lambda c: c["epo"].update(lambda_min=5.0, lambda_max=1.0))


def test_a_missing_local_model_is_left_to_the_model_check():
    """Validation does not trip over a local path that does not exist; check_hub_source names it."""
    from lmfeatures.lm.models import ModelUnavailable, check_hub_source

    cfg = copy.deepcopy(BASE)
    cfg["models"].append({"name": "mine", "source": "/nonexistent/my-llama"})
    validate_config(cfg)
    with pytest.raises(ModelUnavailable, match="has no config.json"):
        check_hub_source("mine", "/nonexistent/my-llama")


def test_a_causal_lm_is_no_fill_mask_proposer(tmp_path):
    from micro import save_fill_mask_model, save_local_model

    save_local_model("llama", str(tmp_path / "llama"))
    with pytest.raises(ConfigError, match=re.escape("'prune.proposer': ") + ".*a llama model, which has no masked-LM"):
        _check(lambda c: c["prune"].update(proposer=str(tmp_path / "llama")))
    save_fill_mask_model(str(tmp_path / "bert"), ["for", "in"])
    assert _check(lambda c: c["prune"].update(proposer=str(tmp_path / "bert")))["prune"]["proposer"].endswith("bert")


def test_an_unknown_corpus_encoding_is_refused_before_any_job():
    with pytest.raises(ConfigError, match=r"^config key 'corpus.encoding': 'utf-9' is not an encoding"):
        _check(lambda c: c["corpus"].update(encoding="utf-9"))


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    """Snakemake's own loader says only "Config file is not valid JSON or YAML"; check-config says where."""
    from lmfeatures.__main__ import main

    broken = tmp_path / "mine.yaml"
    broken.write_text("seed: 0\nmodels:\n  - {name: a, source: train\n  bad: [\n")
    assert main(["check-config", str(broken)]) == 1
    assert f"config file {broken}, line 4, column 6: not valid YAML" in capsys.readouterr().err
    assert main(["check-config", "config/test.yaml"]) == 0


def test_alignment_sizes_with_one_model_is_refused():
    """It ran five minutes, and only the report said that nothing was compared."""
    with pytest.raises(ConfigError, match=r"^config key 'alignment.sizes': lists one model \(neox-s\)"):
        _check(lambda c: c["alignment"].update(sizes=["neox-s"]))
