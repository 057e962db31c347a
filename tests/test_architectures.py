"""Every causal-LM type of the installed transformers, at micro size: hook points discovered and checked.

Each type's micro model (its default config with the sizes shrunk, random weights) either passes,
has no neurons (mixture of experts, no MLP: mlp hooks refused with the reason, resid still works),
is refused by HookedModel with a one-line error naming the key to set, or cannot be built at
micro size (skipped, with the reason). The checks below are independent of HookedModel's own
self-check: HF's output_hidden_states, the model's logits and plain torch hooks.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
import transformers
from micro import NO_NEURONS, NOT_BUILT, PASSED, REFUSED, hook_coverage, micro_model
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from lmfeatures.lm.architectures import ARCHITECTURES, ArchitectureError, discover
from lmfeatures.lm.hooks import HookedModel

REPO = Path(__file__).resolve().parents[1]
# These must pass (issue 8).
MUST_PASS = (
    "gpt2 gpt_neox llama mistral qwen2 qwen3 gemma gemma2 gemma3_text phi phi3 olmo olmo2 opt gptj falcon "
    "bloom stablelm starcoder2 granite cohere gpt_bigcode codegen"
).split()


@pytest.fixture(autouse=True, scope="module")
def quiet_transformers():
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # micro configs trigger many harmless warnings
    yield
    transformers.logging.set_verbosity(level)


@pytest.mark.parametrize("model_type", sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))
def test_hook_points_of_every_causal_lm_type(model_type):
    status, detail, model = hook_coverage(model_type)
    if model_type in MUST_PASS:
        assert status == PASSED, detail
    if status == NOT_BUILT:
        pytest.skip(f"could not be built from a micro config: {detail}")
    if status == REFUSED:
        assert "\n" not in detail and "module_paths." in detail and model_type.split("_")[0] in detail
        with pytest.raises(ArchitectureError):
            HookedModel(model)
        return
    hooked = HookedModel(model)
    ids = torch.randint(0, hooked.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    hooks = [f"resid.{layer}" for layer in range(hooked.n_layers)]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        acts = hooked.run(hooks, input_ids=ids, return_logits=True)
    torch.testing.assert_close(acts["logits"], out.logits)
    hidden = out.hidden_states
    if hidden is not None and len(hidden) == hooked.n_layers + 1:
        # HF's hidden_states start with the embeddings (most models) or the first block's output
        # (mamba, rwkv); the last entry is often after the final norm.
        start = 0 if torch.allclose(hidden[0], acts["resid.0"]) else 1
        for layer in range(hooked.n_layers - 1):
            torch.testing.assert_close(acts[f"resid.{layer}"], hidden[layer + start])
    if status == NO_NEURONS:
        with pytest.raises(ArchitectureError, match=r"'resid.L' and 'embed' still work"):
            hooked.run(["mlp.0"], input_ids=ids)
        return
    projection = model.get_submodule(hooked.spec.blocks)[1].get_submodule(hooked.spec.mlp_out)
    seen = []
    handle = projection.register_forward_hook(lambda mod, args, output: seen.append(output.detach().clone()))
    try:
        with torch.no_grad():
            mlp = hooked.run(["mlp.1"], input_ids=ids, return_logits=True)["mlp.1"]  # the projection runs too
    finally:
        handle.remove()
    assert mlp.shape == (2, 7, hooked.d_mlp)
    bias = getattr(projection, "bias", None)
    direct = mlp @ hooked.mlp_out_weight(1) + (0 if bias is None else bias)
    torch.testing.assert_close(direct.reshape(seen[0].shape), seen[0], rtol=1e-4, atol=1e-5)
    if hooked.spec.mlp_act is not None:
        with torch.no_grad():
            pre = hooked.run(["mlp_pre.1"], input_ids=ids)["mlp_pre.1"]
        assert pre.shape == mlp.shape


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_discovery_finds_what_the_table_says(model_type):
    _, _, model = hook_coverage(model_type)
    found, table = discover(model), ARCHITECTURES[model_type]
    assert (found.blocks, found.mlp_out, found.mlp_act, found.embed, found.unembed) == (
        table.blocks,
        table.mlp_out,
        table.mlp_act,
        table.embed,
        table.unembed,
    )
    assert HookedModel(model, module_paths={"final_norm": None}).spec.final_norm == table.final_norm  # traced


def test_readme_lists_what_the_coverage_test_finds():
    spec = importlib.util.spec_from_file_location("architectures_script", REPO / "scripts" / "architectures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (REPO / "README.md").read_text()
    assert script.readme_block() in readme, "README's architecture list is stale: run python scripts/architectures.py"


def test_a_wrong_module_path_stops_at_load_with_one_line_naming_the_key():
    model = micro_model("qwen3")
    with pytest.raises(ArchitectureError) as err:
        HookedModel(model, module_paths={"final_norm": ""})
    message = str(err.value)
    assert "\n" not in message and "'logits'" in message and "module_paths.final_norm" in message
    with pytest.raises(ArchitectureError, match=r"module_paths.mlp_out='mlp.nowhere' is not a module"):
        HookedModel(model, module_paths={"mlp_out": "mlp.nowhere"})
    with pytest.raises(ArchitectureError, match=r"unknown key 'mlp_output'"):
        HookedModel(model, module_paths={"mlp_output": "mlp.down_proj"})


def test_module_paths_saved_in_the_model_config_are_used():
    model = micro_model("qwen3")
    model.config.lmfeatures_module_paths = {"final_norm": ""}
    with pytest.raises(ArchitectureError, match="module_paths.final_norm"):
        HookedModel(model)


def test_embedding_scale_inside_the_module_is_applied_to_one_hot_inputs():
    """gemma3 multiplies embeddings by sqrt(d_model) inside its embedding module, which HF skips
    when given inputs_embeds: embed_onehot must apply it, or EPO's gradients see another model."""
    hooked = HookedModel(micro_model("gemma3_text"))
    assert hooked.embed_scale == pytest.approx(hooked.d_model**0.5)
    ids = torch.randint(0, hooked.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    onehot = torch.nn.functional.one_hot(ids, hooked.vocab_size).float()
    with torch.no_grad():
        from_ids = hooked.run([], input_ids=ids, return_logits=True)["logits"]
        from_onehot = hooked.run([], inputs_embeds=hooked.embed_onehot(onehot), return_logits=True)["logits"]
    torch.testing.assert_close(from_onehot, from_ids)


def test_folded_unembedding_uses_the_norms_effective_scale():
    """gemma's RMSNorm scales by (1 + w): folding by w alone would be wrong."""
    model = micro_model("gemma")
    norm = model.model.norm
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=torch.Generator().manual_seed(0)))
    hooked = HookedModel(model)
    expected = (1 + norm.weight)[:, None] * hooked.unembedding()
    torch.testing.assert_close(hooked.folded_unembedding(), expected, rtol=1e-4, atol=1e-5)


def test_a_mixture_of_experts_model_is_refused_when_the_config_is_validated(tmp_path):
    from lmfeatures.config import ConfigError, hub_model_shape

    micro_model("mixtral").save_pretrained(tmp_path / "mixtral")
    entry = {"name": "moe", "source": str(tmp_path / "mixtral")}
    with pytest.raises(ConfigError, match=r"moe\).*mixture-of-experts.*'resid.L' and 'embed' hooks still work"):
        hub_model_shape(entry, tmp_path / "mixtral")
    micro_model("qwen3").save_pretrained(tmp_path / "qwen3")
    shape = hub_model_shape({"name": "q", "source": str(tmp_path / "qwen3")}, tmp_path / "qwen3")
    assert shape == {
        "n_layers": 3,
        "d_mlp": 48,
        "d_model": 32,
        "vocab_size": 64,
        "n_positions": 64,
        "context_free": frozenset(),  # sequential blocks: every MLP reads the context
    }
    micro_model("gpt_neox").save_pretrained(tmp_path / "neox")
    assert hub_model_shape({"name": "n", "source": str(tmp_path / "neox")}, tmp_path / "neox")["context_free"] == {0}


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ({"mlp_out": "mlp.up_proj"}, "maps 32 features to 48, not into the residual stream"),
        ({"mlp_out": "self_attn.o_proj"}, "does not change the residual stream by it"),
        ({"mlp_act": "mlp.down_proj"}, "zeroing the module's output leaves mlp_out's input unchanged"),
    ],
)
def test_module_paths_that_name_the_wrong_module_fail_the_self_check(paths, message):
    """Each of these computes wrong data if accepted: W_out @ x holds for any Linear, so the check
    ablates the modules and watches what changes."""
    model = micro_model("qwen3")
    with pytest.raises(ArchitectureError, match=message) as raised:
        HookedModel(model, module_paths=paths)
    assert raised.value.key == next(iter(paths))


def test_a_wrong_module_path_is_refused_with_its_config_key_before_any_job(tmp_path):
    from lmfeatures.config import ConfigError, hub_model_shape

    micro_model("qwen3").save_pretrained(tmp_path / "qwen3")
    entry = {"name": "q", "source": str(tmp_path / "qwen3"), "module_paths": {"mlp_out": "mlp.up_proj"}}
    with pytest.raises(ConfigError, match=r"^config key 'models\[3\]\.module_paths\.mlp_out' \(q\): .*maps 32"):
        hub_model_shape(entry, tmp_path / "qwen3", "models[3]")
    entry["module_paths"] = {"mlp_out": "mlp.nowhere"}
    with pytest.raises(ConfigError, match=r"^config key 'models\[3\]\.module_paths\.mlp_out' \(q\): .*not a module"):
        hub_model_shape(entry, tmp_path / "qwen3", "models[3]")
