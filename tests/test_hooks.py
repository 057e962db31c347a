"""HookedModel returns the activations its hook names promise, on every supported architecture.

Each check compares against something computed independently of lmfeatures.lm.hooks:
the model's own weights by hand, HF's output_hidden_states, or plain torch hooks.
"""

import pytest
import torch
import torch.nn.functional as F
from micro import MICRO_ARCHITECTURES, micro_model
from transformers import AutoModelForCausalLM, OPTConfig

from lmfeatures.lm.architectures import ARCHITECTURES, ArchitectureError, ArchSpec, register_architecture
from lmfeatures.lm.hooks import HookedModel, parse_hook

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N_LAYERS = 3  # micro_model's default


@pytest.fixture(params=MICRO_ARCHITECTURES)
def arch(request) -> str:
    return request.param


@pytest.fixture(params=DEVICES)
def hooked(request, arch) -> HookedModel:
    return HookedModel(micro_model(arch).to(request.param))


@pytest.fixture
def ids(hooked) -> torch.Tensor:
    """A fixed batch of token ids [batch=2, pos=6] on the model's device."""
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, hooked.vocab_size, (2, 6), generator=gen).to(hooked.device)


@pytest.fixture
def restore_registry():
    saved = dict(ARCHITECTURES)
    yield
    ARCHITECTURES.clear()
    ARCHITECTURES.update(saved)


def blocks(hooked: HookedModel) -> torch.nn.ModuleList:
    return hooked.model.get_submodule(hooked.spec.blocks)


def n_hooks(model: torch.nn.Module) -> int:
    """All forward hooks and pre-hooks currently registered anywhere in the model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def neurons_by_hand(arch: str, mlp: torch.nn.Module, x: torch.Tensor, config) -> torch.Tensor:
    """Post-activation MLP neurons [batch, pos, d_mlp] from the MLP's input x [batch, pos, d_model]."""
    if arch == "gpt2":
        assert config.activation_function == "gelu_new"  # tanh-approximate GELU
        return F.gelu(x @ mlp.c_fc.weight + mlp.c_fc.bias, approximate="tanh")  # Conv1D weight is [in, out]
    if arch == "gpt_neox":
        assert config.hidden_act == "gelu"
        return F.gelu(x @ mlp.dense_h_to_4h.weight.T + mlp.dense_h_to_4h.bias)
    assert config.hidden_act == "silu" and mlp.gate_proj.bias is None and mlp.up_proj.bias is None
    return F.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)


def test_dimensions(hooked, arch):
    d_mlp = 32 if arch in ("gpt2", "gpt_neox") else 48
    assert (hooked.n_layers, hooked.d_model, hooked.d_mlp, hooked.vocab_size) == (N_LAYERS, 16, d_mlp, 64)
    assert hooked.model_type == arch
    assert hooked.device == next(hooked.model.parameters()).device
    assert hooked.dtype == torch.float32


def run_capturing_mlp_inputs(hooked: HookedModel, names: list[str], ids: torch.Tensor):
    """(hooked.run(names) with logits, {layer: the MLP's input [batch, pos, d_model]}) via plain torch hooks."""
    mlp_inputs = {}
    handles = [
        block.mlp.register_forward_pre_hook(lambda mod, args, layer=layer: mlp_inputs.__setitem__(layer, args[0]))
        for layer, block in enumerate(blocks(hooked))
    ]
    try:
        return hooked.run(names, input_ids=ids, return_logits=True), mlp_inputs
    finally:
        for handle in handles:
            handle.remove()


def test_mlp_matches_weights_by_hand(hooked, arch, ids):
    acts, mlp_inputs = run_capturing_mlp_inputs(hooked, [f"mlp.{layer}" for layer in range(N_LAYERS)], ids)
    for layer, block in enumerate(blocks(hooked)):
        expected = neurons_by_hand(arch, block.mlp, mlp_inputs[layer], hooked.model.config)
        assert acts[f"mlp.{layer}"].shape == (2, 6, hooked.d_mlp)
        torch.testing.assert_close(acts[f"mlp.{layer}"], expected)


def pre_activations_by_hand(arch: str, mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The activation function's input [batch, pos, d_mlp] from the MLP's input x [batch, pos, d_model]."""
    if arch == "gpt2":
        return x @ mlp.c_fc.weight + mlp.c_fc.bias
    if arch == "gpt_neox":
        return x @ mlp.dense_h_to_4h.weight.T + mlp.dense_h_to_4h.bias
    return x @ mlp.gate_proj.weight.T


def test_mlp_pre_matches_weights_by_hand(hooked, arch, ids):
    names = [f"mlp_pre.{layer}" for layer in range(N_LAYERS)] + ["mlp.1"]
    acts, mlp_inputs = run_capturing_mlp_inputs(hooked, names, ids)
    for layer, block in enumerate(blocks(hooked)):
        expected = pre_activations_by_hand(arch, block.mlp, mlp_inputs[layer])
        assert acts[f"mlp_pre.{layer}"].shape == (2, 6, hooked.d_mlp)
        torch.testing.assert_close(acts[f"mlp_pre.{layer}"], expected)
    if arch in ("gpt2", "gpt_neox"):  # a plain MLP: the neuron is the activation of its pre-activation
        act = F.gelu if arch == "gpt_neox" else (lambda x: F.gelu(x, approximate="tanh"))
        torch.testing.assert_close(acts["mlp.1"], act(acts["mlp_pre.1"]))


def test_mlp_pre_stops_before_the_activation(hooked):
    """Asking only for mlp_pre.0 stops the forward pass inside block 0 (block 1 never runs)."""
    ran = []
    handle = blocks(hooked)[1].register_forward_pre_hook(lambda mod, args: ran.append(1))
    try:
        hooked.run(["mlp_pre.0"], input_ids=torch.zeros(1, 3, dtype=torch.long, device=hooked.device))
    finally:
        handle.remove()
    assert not ran and parse_hook("mlp_pre.2") == ("mlp_pre", 2)


def test_resid_matches_hidden_states(hooked, ids):
    # Left padding on the first sequence, to check the attention mask reaches the model.
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    acts = hooked.run([f"resid.{layer}" for layer in range(N_LAYERS)], input_ids=ids, attention_mask=mask)
    hidden = hooked.model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in range(N_LAYERS - 1):
        assert acts[f"resid.{layer}"].shape == (2, 6, hooked.d_model)
        torch.testing.assert_close(acts[f"resid.{layer}"], hidden[layer + 1])
    # HF's last hidden state has the final norm applied; ours is the raw block output.
    last = acts[f"resid.{N_LAYERS - 1}"]
    assert not torch.allclose(last, hidden[-1])
    torch.testing.assert_close(hooked.final_norm()(last), hidden[-1])


def test_embed_is_token_embedding(hooked, ids):
    acts = hooked.run(["embed"], input_ids=ids)
    expected = hooked.embedding_matrix()[ids]
    assert expected.shape == (2, 6, hooked.d_model)
    torch.testing.assert_close(acts["embed"], expected)
    torch.testing.assert_close(hooked.embed(ids), expected)


def test_forward_stops_after_deepest_hook(hooked, ids):
    calls = [0] * N_LAYERS

    def count(layer):
        def hook(mod, args):
            calls[layer] += 1

        return hook

    # Pre-hooks count blocks *entered*: a block we stop inside has run, the ones after it must not.
    handles = [block.register_forward_pre_hook(count(layer)) for layer, block in enumerate(blocks(hooked))]
    hooks_before = n_hooks(hooked.model)
    try:
        for requested, expected_calls in [
            (["embed"], [0, 0, 0]),
            (["mlp.0"], [1, 0, 0]),
            (["mlp.1", "embed"], [1, 1, 0]),
            (["resid.0"], [1, 0, 0]),
            (["resid.1", "mlp.0"], [1, 1, 0]),
        ]:
            calls[:] = [0] * N_LAYERS
            hooked.run(requested, input_ids=ids)
            assert calls == expected_calls, requested
            assert n_hooks(hooked.model) == hooks_before  # run() removed its own hooks

        calls[:] = [0] * N_LAYERS
        acts = hooked.run(["mlp.0"], input_ids=ids, return_logits=True)
        assert calls == [1] * N_LAYERS
        assert acts["logits"].shape == (2, 6, hooked.vocab_size)
        torch.testing.assert_close(acts["logits"], hooked.model(ids).logits)
    finally:
        for handle in handles:
            handle.remove()


def test_hooks_removed_when_forward_fails(hooked, ids):
    def explode(mod, args, out):
        raise RuntimeError("boom")

    handle = blocks(hooked)[1].register_forward_hook(explode)
    hooks_before = n_hooks(hooked.model)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            hooked.run(["mlp.0", "resid.2"], input_ids=ids)
        assert n_hooks(hooked.model) == hooks_before
    finally:
        handle.remove()
    assert n_hooks(hooked.model) == 0


def test_returns_only_requested_hooks(hooked, ids):
    acts = hooked.run(["resid.2", "embed", "mlp.1", "mlp.1"], input_ids=ids)
    assert list(acts) == ["resid.2", "embed", "mlp.1"]
    acts = hooked.run(["mlp.1"], input_ids=ids, return_logits=True)
    assert list(acts) == ["mlp.1", "logits"]
    assert list(hooked.run([], input_ids=ids, return_logits=True)) == ["logits"]
    assert hooked.run([], input_ids=ids) == {}


def test_inputs_embeds_path_matches_and_has_gradients(hooked, ids):
    names = ["embed", "mlp.1", "resid.1"]
    from_ids = hooked.run(names, input_ids=ids)

    # One-hot inputs, the way later stages optimise over tokens: gradients must reach them.
    one_hot = F.one_hot(ids, hooked.vocab_size).to(hooked.dtype).requires_grad_()
    embeds = one_hot @ hooked.embedding_matrix()
    from_embeds = hooked.run(names, inputs_embeds=embeds)
    assert from_embeds["embed"] is embeds
    for name in names:
        torch.testing.assert_close(from_embeds[name], from_ids[name])

    from_embeds["mlp.1"][:, -1].sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0

    only_embed = hooked.run(["embed"], inputs_embeds=embeds)
    assert list(only_embed) == ["embed"] and only_embed["embed"] is embeds


def test_mlp_out_weight_orientation(hooked, ids):
    mlp_outputs = {}
    handles = [
        block.mlp.register_forward_hook(lambda mod, args, out, layer=layer: mlp_outputs.__setitem__(layer, out))
        for layer, block in enumerate(blocks(hooked))
    ]
    try:
        acts = hooked.run([f"mlp.{layer}" for layer in range(N_LAYERS)], input_ids=ids, return_logits=True)
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(N_LAYERS):
        w_out = hooked.mlp_out_weight(layer)
        assert w_out.shape == (hooked.d_mlp, hooked.d_model)
        bias = blocks(hooked)[layer].get_submodule(hooked.spec.mlp_out).bias
        expected = acts[f"mlp.{layer}"] @ w_out + (0 if bias is None else bias)
        torch.testing.assert_close(expected, mlp_outputs[layer])


def test_unembedding_gives_logits(hooked, ids):
    acts = hooked.run([f"resid.{N_LAYERS - 1}"], input_ids=ids, return_logits=True)
    w_u = hooked.unembedding()
    assert w_u.shape == (hooked.d_model, hooked.vocab_size)
    bias = hooked.model.get_submodule(hooked.spec.unembed).bias
    assert bias is None  # no lm-head bias in any of these architectures
    logits = hooked.final_norm()(acts[f"resid.{N_LAYERS - 1}"]) @ w_u
    torch.testing.assert_close(logits, acts["logits"])


def micro_opt() -> torch.nn.Module:
    config = OPTConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        ffn_dim=32,
        num_attention_heads=2,
        max_position_embeddings=64,
        word_embed_proj_dim=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def test_opt_hook_points_are_discovered_without_a_table_entry():
    model = micro_opt()
    assert "opt" not in ARCHITECTURES
    hooked = HookedModel(model)
    assert (hooked.spec.blocks, hooked.spec.mlp_out, hooked.spec.mlp_act) == (
        "model.decoder.layers",
        "fc2",
        "activation_fn",
    )
    assert hooked.spec.final_norm == "model.decoder.final_layer_norm"  # traced at load
    assert (hooked.n_layers, hooked.d_model, hooked.d_mlp) == (2, 16, 32)
    fc2 = model.model.decoder.layers[1].fc2
    fc2_out = []
    handle = fc2.register_forward_hook(lambda mod, args, out: fc2_out.append(out))
    ids = torch.arange(12).reshape(2, 6)
    try:
        acts = hooked.run(["resid.0", "mlp.1"], input_ids=ids, return_logits=True)
    finally:
        handle.remove()
    hidden = model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["resid.0"], hidden[1])
    # OPT runs its MLP on [batch * pos, ...]; the hook still gives [batch, pos, d_mlp], in token order.
    assert acts["mlp.1"].shape == (2, 6, 32) and (acts["mlp.1"] >= 0).all()  # OPT uses ReLU
    expected = (acts["mlp.1"] @ hooked.mlp_out_weight(1) + fc2.bias).flatten(0, 1)
    torch.testing.assert_close(expected, fc2_out[0])


def test_a_table_entry_overrides_discovery_and_a_wrong_one_fails_at_construction(restore_registry):
    register_architecture(
        "llama",
        ArchSpec(
            blocks="model.layers",
            mlp_out="mlp.c_proj",
            embed="model.embed_tokens",
            final_norm="model.norm",
            unembed="lm_head",
        ),
    )
    with pytest.raises(ArchitectureError, match=r"module_paths.mlp_out='mlp.c_proj' is not a module"):
        HookedModel(micro_model("llama"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("embed", ("embed", None)),
        ("mlp.0", ("mlp", 0)),
        ("mlp.3", ("mlp", 3)),
        ("resid.0", ("resid", 0)),
        ("resid.12", ("resid", 12)),
    ],
)
def test_parse_hook(name, expected):
    assert parse_hook(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "mlp",
        "mlp.",
        "mlp.x",
        "mlp.-1",
        "mlp.1.2",
        "mlp.+1",
        "mlp. 1",
        "attn.0",
        "embed.0",
        "Mlp.0",
        " mlp.0",
        "logits",
        "",
        "mlp.²",
    ],
)
def test_malformed_hook_names(name):
    with pytest.raises(ValueError, match=r"malformed hook name .*'mlp\.<layer>'") as err:
        parse_hook(name)
    assert "\n" not in str(err.value) and repr(name) in str(err.value)


def test_layer_out_of_range():
    hooked = HookedModel(micro_model("gpt_neox", n_layers=4))
    assert hooked.check_hook("resid.3") == ("resid", 3)
    message = "layer 7 is out of range: this gpt_neox model has 4 layers (0-3)"
    with pytest.raises(ValueError) as err:
        hooked.check_hook("mlp.7")
    assert str(err.value) == message
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"layer 4 is out of range"):
        hooked.run(["embed", "resid.4"], input_ids=ids)
    with pytest.raises(ValueError, match=r"layer 4 is out of range"):
        hooked.mlp_out_weight(4)


def test_run_argument_errors():
    hooked = HookedModel(micro_model("gpt2"))
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        hooked.run(["embed"])
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        hooked.run(["embed"], input_ids=ids, inputs_embeds=hooked.embed(ids))
    with pytest.raises(TypeError, match="sequence of hook names"):
        hooked.run("mlp.0", input_ids=ids)


def test_micro_model_is_deterministic_and_leaves_rng_alone(arch):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = micro_model(arch, seed=0), micro_model(arch, seed=0), micro_model(arch, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    params_a, params_b, params_c = (list(m.parameters()) for m in (a, b, c))
    assert all(torch.equal(p, q) for p, q in zip(params_a, params_b))
    assert not all(torch.equal(p, q) for p, q in zip(params_a, params_c))
    assert not a.training and all(p.dtype == torch.float32 for p in params_a)
    assert a.config.model_type == arch
    assert HookedModel(micro_model(arch, vocab_size=10, n_layers=1)).vocab_size == 10
