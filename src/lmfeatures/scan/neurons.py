"""Neuron-level views of a scan: selection, token concentration, direct logit effect, per-token activations.

A neuron is named `L{layer}N{index}` (TransformerLens / Neuroscope convention) and addressed in
config as "layer.index", e.g. "2.117".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.scan.scan import ScanError
from lmfeatures.store.scans import Scan


@dataclass(frozen=True, order=True)
class Neuron:
    layer: int
    index: int

    @property
    def name(self) -> str:
        return f"L{self.layer}N{self.index}"

    @property
    def hook(self) -> str:
        return f"mlp.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> Neuron:
        try:
            layer, index = (int(p) for p in str(text).split("."))
        except ValueError:
            raise ValueError(f"neuron {text!r} is not of the form 'layer.index', e.g. '2.117'") from None
        return cls(layer, index)

    @classmethod
    def from_name(cls, name: str) -> Neuron:
        """The inverse of `name`: 'L2N117' -> Neuron(2, 117)."""
        m = re.fullmatch(r"L(\d+)N(\d+)", name)
        if m is None:
            raise ValueError(f"neuron name {name!r} is not of the form 'L<layer>N<index>', e.g. 'L2N117'")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass
class NeuronSpec:
    """Which neurons a stage looks at: the config's shared `neurons:` section, merged with a stage's
    own `neurons:` overrides (e.g. `epo.neurons`). The selection is the union of every rule below."""

    explicit: list[str] = field(default_factory=list)  # "layer.index"
    top_per_layer: int = 3  # highest max activation per layer
    top_concentration: int = 5  # most token-concentrated neurons overall (the report's table)
    random_per_layer: int = 1
    layers: list[int] | None = None  # layers the per-layer and concentration rules look at; None = all
    seed: int = 0


def token_concentration(scan: Scan, hook: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of a unit's top-k examples whose max token is its most common max token.
    Returns (share [units], that token id [units]); empty slots of the top-k (window -1) do not count."""
    w, p = scan.tensor(hook, "top_window"), scan.tensor(hook, "top_pos")  # [k, units]
    found = w >= 0
    tokens = scan.windows.ids[w.clamp(min=0), p.clamp(min=0)].masked_fill(~found, -1)
    # the mode of the found tokens: -1 placeholders are pushed below every real token's count
    counts = (tokens[:, None, :] == tokens[None, :, :]).sum(1).masked_fill(~found, -1)  # [k, units]
    best = counts.max(0)
    mode = tokens.gather(0, best.indices[None]).squeeze(0)
    return best.values.clamp(min=0) / found.sum(0).clamp(min=1), mode


def resolve_neurons(scan: Scan, spec: NeuronSpec, extra: list[Neuron] = ()) -> list[Neuron]:
    """The neurons `spec` selects in `scan`, sorted, plus `extra` (e.g. the trained model's
    selection, for its twin). Every layer and index is range-checked here, against the scan."""
    n_layers = scan.meta["n_layers"]

    def check_layer(layer: int, what: str) -> None:
        if not 0 <= layer < n_layers:
            raise ScanError(
                f"{what}: layer {layer} is out of range for {scan.meta['model']} ({n_layers} layers, 0-{n_layers - 1})"
            )

    chosen = set(extra)
    for text in spec.explicit:
        neuron = Neuron.parse(text)
        check_layer(neuron.layer, f"neuron {text}")
        scan.check_unit(neuron.hook, neuron.index)
        chosen.add(neuron)
    layers = range(n_layers) if spec.layers is None else spec.layers
    for layer in layers:
        check_layer(layer, "neurons.layers")
    gen = torch.Generator().manual_seed(spec.seed)
    conc_all = []
    for layer in layers:
        hook = f"mlp.{layer}"
        unit_max = scan.tensor(hook, "max")
        top = unit_max.topk(min(spec.top_per_layer, unit_max.numel())).indices
        chosen.update(Neuron(layer, int(i)) for i in top)
        rand = torch.randperm(unit_max.numel(), generator=gen)[: spec.random_per_layer]
        chosen.update(Neuron(layer, int(i)) for i in rand)
        share, _ = token_concentration(scan, hook)
        conc_all += [(float(s), Neuron(layer, i)) for i, s in enumerate(share.tolist())]
    conc_all.sort(key=lambda t: (-t[0], t[1]))
    chosen.update(n for _, n in conc_all[: spec.top_concentration])
    return sorted(chosen)


def direct_logit_effect(model: HookedModel, neuron: Neuron, top: int = 10, bottom: int = 5):
    """W_out[neuron] @ diag(final norm weight) @ W_U: which next tokens the neuron pushes up / down
    directly, with the final norm's scale folded in as Neuroscope and TransformerLens do.
    Returns ([(token id, weight)] top, [(token id, weight)] bottom); None when the model has no
    readable unembedding."""
    try:
        w_u = model.folded_unembedding()  # [d_model, vocab]
    except (AttributeError, ValueError):
        return None
    with torch.no_grad():
        effect = model.mlp_out_weight(neuron.layer)[neuron.index].float() @ w_u.float()  # [vocab]
        hi, lo = effect.topk(top), (-effect).topk(bottom)
    return (list(zip(hi.indices.tolist(), hi.values.tolist())), list(zip(lo.indices.tolist(), (-lo.values).tolist())))


@torch.no_grad()
def token_activations(model: HookedModel, ids: torch.Tensor, neurons: list[Neuron], batch_size: int = 64):
    """Activations of `neurons` at every position of ids [windows, pos] -> {neuron: [windows, pos]}.
    One forward per batch up to the deepest layer needed."""
    hooks = sorted({n.hook for n in neurons}, key=lambda h: int(h.split(".")[1]))
    out = {n: [] for n in neurons}
    for b in range(0, len(ids), batch_size):
        acts = model.run(hooks, input_ids=ids[b : b + batch_size].to(model.device))
        for n in neurons:
            out[n].append(acts[n.hook][..., n.index].float().cpu())
    return {n: torch.cat(v) for n, v in out.items()}
