"""One neuron selection for every stage: resolve_neurons against a hand-checked micro scan."""

from pathlib import Path

import pytest
import torch

from lmfeatures.hooks import HookedModel
from lmfeatures.micro import micro_model
from lmfeatures.neurons import Neuron, NeuronSpec, resolve_neurons, token_concentration
from lmfeatures.scan import Scan, ScanConfig, ScanError, make_windows, scan


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
