"""One neuron selection for every stage: resolve_neurons against a hand-checked micro scan."""

from pathlib import Path

import pytest
import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.scan.neurons import Neuron, NeuronSpec, direct_logit_effect, resolve_neurons, token_concentration
from lmfeatures.scan.scan import ScanConfig, ScanError, make_windows, scan
from lmfeatures.store.scans import Scan


@pytest.fixture(scope="module")
def micro_scan():
    model = HookedModel(micro_model("gpt_neox", seed=1))
    g = torch.Generator().manual_seed(0)
    windows = make_windows([torch.randint(0, 64, (40,), generator=g).tolist() for _ in range(6)], 16)
    result, _ = scan(model, windows, ScanConfig(context_length=16, batch_size=4, top_k=4))
    meta = {"model": "micro", "n_layers": model.n_layers, "hooks": [f"mlp.{i}" for i in range(model.n_layers)]}
    return Scan(meta=meta, tensors=result, windows=windows, path=Path("."))


def _none(**kw):
    return NeuronSpec(**{"top_per_layer": 0, "top_concentration": 0, "random_per_layer": 0, **kw})


def test_each_rule_selects_what_it_says(micro_scan):
    top = micro_scan.tensor("mlp.1", "max").topk(2).indices.tolist()
    assert resolve_neurons(micro_scan, _none(top_per_layer=2, layers=[1])) == sorted(Neuron(1, i) for i in top)
    assert resolve_neurons(micro_scan, _none(explicit=["2.5", "0.7"])) == [Neuron(0, 7), Neuron(2, 5)]
    # the most token-concentrated neuron overall, ties broken by (layer, index)
    shares = torch.stack([token_concentration(micro_scan, f"mlp.{layer}")[0] for layer in range(3)])
    best = max((float(shares[layer, i]), -layer, -i) for layer in range(3) for i in range(shares.shape[1]))
    assert resolve_neurons(micro_scan, _none(top_concentration=1)) == [Neuron(-best[1], -best[2])]
    rand = resolve_neurons(micro_scan, _none(random_per_layer=2, seed=3))
    assert len(rand) == 6 and rand == resolve_neurons(micro_scan, _none(random_per_layer=2, seed=3))
    union = resolve_neurons(micro_scan, _none(explicit=["2.5"], top_per_layer=2, layers=[1]))
    assert union == sorted({Neuron(2, 5)} | {Neuron(1, i) for i in top})
    assert Neuron(0, 0) in resolve_neurons(micro_scan, _none(), extra=[Neuron(0, 0)])


@pytest.mark.parametrize(
    "spec, message",
    [
        (_none(explicit=["3.0"]), r"neuron 3.0: layer 3 is out of range for micro \(3 layers, 0-2\)"),
        (_none(explicit=["1.32"]), "unit 32 is out of range for mlp.1"),
        (_none(top_per_layer=1, layers=[0, 5]), "neurons.layers: layer 5 is out of range"),
    ],
)
def test_one_range_check(micro_scan, spec, message):
    with pytest.raises(ScanError, match=message):
        resolve_neurons(micro_scan, spec)


def test_token_concentration_by_hand():
    ids = torch.tensor([[5, 9, 5, 1], [7, 5, 2, 3], [4, 4, 4, 4]])  # 3 windows of 4 tokens
    # unit 0's top examples land on tokens 5, 5, 7, 5; unit 1's on 9, 2, 4, 3
    top_window = torch.tensor([[0, 0], [1, 1], [1, 2], [0, 1]])
    top_pos = torch.tensor([[0, 1], [1, 2], [0, 0], [2, 3]])
    windows = make_windows([list(range(4))], 4)
    windows.ids = ids
    s = Scan(
        meta={}, tensors={"mlp.0.top_window": top_window, "mlp.0.top_pos": top_pos}, windows=windows, path=Path(".")
    )
    share, mode = token_concentration(s, "mlp.0")
    assert share.tolist() == [0.75, 0.25] and mode.tolist()[0] == 5


def test_direct_logit_effect_folds_the_final_norm_scale():
    hooked = HookedModel(micro_model("gpt_neox", seed=2))
    norm = hooked.final_norm()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-2.0, 3.0, hooked.d_model))  # far from the all-ones default
    up, down = direct_logit_effect(hooked, Neuron(1, 4), top=3, bottom=2)
    w_out, w, w_u = (t.detach() for t in (hooked.mlp_out_weight(1)[4], norm.weight, hooked.unembedding()))
    by_hand = [sum(float(w_out[d] * w[d] * w_u[d, v]) for d in range(hooked.d_model)) for v in range(hooked.vocab_size)]
    order = sorted(range(hooked.vocab_size), key=lambda v: -by_hand[v])
    assert [t for t, _ in up] == order[:3] and [t for t, _ in down] == order[::-1][:2]
    assert all(abs(w - by_hand[t]) < 1e-4 for t, w in up + down)
    unfolded = hooked.mlp_out_weight(1)[4] @ hooked.unembedding()
    assert [t for t, _ in up] != unfolded.topk(3).indices.tolist()  # the fold changes the ranking here
