"""Neuron pages show what the scan counted: the marked token and its value are the scan's."""

import re

import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.report.pages import NeuronPage, dataset_page
from lmfeatures.scan.neurons import Neuron, token_activations
from lmfeatures.scan.scan import ScanConfig, make_windows, scan
from lmfeatures.store.scans import Scan


class _Tok:
    def decode(self, ids):
        return f"t{ids[0]} "


def _examples(html: str) -> list[tuple[str, float, int]]:
    """(label, value shown, index of the marked token in the full window) per example."""
    out = []
    for div in re.findall(r'<div class="ex">(.*?)</div>', html, flags=re.S):
        label, value = re.match(r'<span class="act">(.*) act (-?[\d.]+)</span>', div).groups()
        full = div[div.index("<details>") :]
        classes = re.findall(r'<span class="(tok m|tok)"', full)
        out.append((label, float(value), classes.index("tok m")))
    return out


def test_pages_mark_the_scans_position_and_value():
    model = HookedModel(micro_model("gpt_neox", seed=4))
    g = torch.Generator().manual_seed(2)
    docs = [torch.randint(1, 64, (L,), generator=g).tolist() for L in (30, 45, 20, 38)]
    windows = make_windows(docs, 16)  # documents' last windows overlap: context-only positions
    assert (windows.valid_from > 0).any()
    cfg = ScanConfig(context_length=16, batch_size=4, top_k=5, n_intervals=3, per_interval=3, n_random=4)
    result, _ = scan(model, windows, cfg)
    meta = {
        "model": "m",
        "n_layers": 3,
        "n_tokens": int(result["n_tokens"]),
        "scan_config": {"context_length": 16, "max_per_document": 2},
    }
    meta["doc_ids"] = [f"doc{i}" for i in range(len(docs))]
    s = Scan(meta=meta, tensors=result, windows=windows, path=None)
    neuron = Neuron(2, 7)
    acts = token_activations(model, windows.ids, [neuron])[neuron]  # [windows, pos]
    acts[:, 0] = 100.0  # a value no counted position has: it must never be the marked one where not counted
    token_acts = {w: acts[w] for w in range(len(windows.ids))}
    page = dataset_page("m", neuron, s, _Tok(), token_acts, None, {}, [], None)
    assert isinstance(page, NeuronPage) and [x.title for x in page.sections][2] == "Top examples (one per window)"
    html = page.html()
    docs = {int(windows.doc[w]) for w in result["mlp.2.top_window"][:, 7].tolist()}
    assert f"5 windows from {len(docs)} documents (at most 2 per document)" in html
    examples = _examples(html)
    top = [e for e in examples if e[0].startswith("#")]
    assert len(top) == 5
    for k, (_, value, marked) in enumerate(top):
        assert marked == int(result["mlp.2.top_pos"][k, 7])
        assert abs(value - float(result["mlp.2.top_values"][k, 7])) < 1e-3
    others = [e for e in examples if not e[0].startswith("#")]
    shown = [int(w) for w in result["mlp.2.interval_window"].flip(0)[:, :, 7].flatten() if w >= 0]  # top first
    shown += result["random_window"].tolist()
    assert len(others) == len(shown)
    for (_, value, marked), w in zip(others, shown):
        counted = int(windows.valid_from[w])
        assert marked >= counted
        assert abs(value - float(acts[w, counted:].max())) < 1e-3
