"""The streaming scan against brute force on a micro model (exact top-k, moments, histogram)."""

import math

import numpy as np
import pytest
import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.scan.scan import HIST_BINS, ScanConfig, ScanError, make_windows, scan
from lmfeatures.store.scans import load_scan, scan_meta, write_scan


def _docs(seed=0, n=9, vocab=64):
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 40, 17, 23, 3, 64, 16, 31, 50][:n]
    return [torch.randint(0, vocab, (L,), generator=g).tolist() for L in lengths]


def test_windows_cover_every_token_once():
    docs = _docs()
    w = make_windows(docs, 16)
    assert w.skipped_short_docs == 2  # lengths 5 and 3
    counted = {}
    for i in range(len(w.doc)):
        d, s, v = int(w.doc[i]), int(w.start[i]), int(w.valid_from[i])
        assert w.ids[i].tolist() == docs[d][s : s + 16]
        for p in range(s + v, s + 16):
            counted[(d, p)] = counted.get((d, p), 0) + 1
    expected = {(d, p) for d, toks in enumerate(docs) if len(toks) >= 16 for p in range(len(toks))}
    assert set(counted) == expected and set(counted.values()) == {1}
    with pytest.raises(ScanError, match="no document has at least"):
        make_windows([[1, 2], [3]], 16)


def test_token_budget_is_respected():
    w = make_windows(_docs(), 16, max_tokens=40)
    assert 40 <= int((16 - w.valid_from).sum()) < 40 + 16


def _brute_force(model, windows, hook, batch_size):
    # Same batches as the scan (last one padded by repeating the last window): a forward pass's
    # last bits may depend on the batch shape, and this test is about the aggregation.
    n = len(windows.ids)
    parts = []
    with torch.no_grad():
        for b in range(0, n, batch_size):
            rows = torch.arange(b, b + batch_size).clamp(max=n - 1)
            parts.append(model.run([hook], input_ids=windows.ids[rows])[hook][: min(batch_size, n - b)])
    acts = torch.cat(parts)  # [windows, pos, units]
    valid = torch.arange(acts.shape[1])[None, :] >= windows.valid_from[:, None]
    return acts, valid


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_streaming_scan_equals_brute_force(tmp_path, arch):
    model = HookedModel(micro_model(arch, seed=1))
    windows = make_windows(_docs(vocab=64), 16)
    cfg = ScanConfig(
        context_length=16,
        batch_size=3,
        top_k=4,
        max_per_document=None,
        kinds=["mlp", "resid"],
        density_threshold=0.1,
        n_intervals=3,
        per_interval=2,
        n_random=3,
    )
    result, _ = scan(model, windows, cfg)
    for hook in ("mlp.0", "mlp.2", "resid.1"):
        acts, valid = _brute_force(model, windows, hook, cfg.batch_size)
        x = acts[valid].double()  # [tokens, units]
        win_max = acts.masked_fill(~valid[..., None], -math.inf).max(1).values  # [windows, units]
        top_v, top_w = win_max.topk(4, dim=0)
        assert torch.equal(result[f"{hook}.top_values"], top_v)
        # the window ids point at windows whose max is that value, at the stored position
        got_w, got_p = result[f"{hook}.top_window"], result[f"{hook}.top_pos"]
        assert torch.equal(win_max.gather(0, got_w), top_v)
        assert torch.equal(acts[got_w, got_p, torch.arange(acts.shape[2])[None, :]], top_v)
        assert valid[got_w, got_p].all()
        n = x.shape[0]
        mean, var = x.mean(0), x.var(0, unbiased=False)
        sd = var.sqrt()
        assert result["n_tokens"] == n
        assert torch.allclose(result[f"{hook}.mean"].double(), mean, atol=1e-5)
        assert torch.allclose(result[f"{hook}.var"].double(), var, rtol=1e-4, atol=1e-7)
        skew = ((x - mean) ** 3).mean(0) / sd**3
        kurt = ((x - mean) ** 4).mean(0) / sd**4 - 3
        assert torch.allclose(result[f"{hook}.skew"].double(), skew, rtol=1e-3, atol=1e-4)
        assert torch.allclose(result[f"{hook}.kurtosis"].double(), kurt, rtol=1e-3, atol=1e-3)
        assert torch.equal(result[f"{hook}.max"], x.max(0).values.float())
        assert torch.equal(result[f"{hook}.min"], x.min(0).values.float())
        assert torch.allclose(result[f"{hook}.density"].double(), (x > 0).double().mean(0))
        assert torch.allclose(result[f"{hook}.density_above_threshold"].double(), (x > 0.1).double().mean(0))
        # histogram: the final bin width applied to all values at once gives the same counts
        width = result[f"{hook}.bin_width"]
        idx = torch.floor(x.float() / width).long() + HIST_BINS // 2
        assert idx.min() >= 0 and idx.max() < HIST_BINS  # the range holds every value
        brute = torch.stack([torch.bincount(idx[:, u], minlength=HIST_BINS) for u in range(x.shape[1])]).float()
        assert torch.equal(result[f"{hook}.hist"], brute)
        # interval samples: each picked window's max lies in its interval; share sums to the share above 0
        top = x.max(0).values.float()
        iw = result[f"{hook}.interval_window"]  # [intervals, per, units]
        for i in range(3):
            for u in range(x.shape[1]):
                for w in iw[i, :, u].tolist():
                    if w >= 0:
                        v = float(win_max[w, u].half())
                        assert top[u] * i / 3 - 1e-2 <= v <= top[u] * (i + 1) / 3 + 1e-2
        assert torch.allclose(result[f"{hook}.interval_share"].sum(0).double(), (x > 0).double().mean(0), atol=0.05)


def test_scan_is_reproducible_and_round_trips(tmp_path):
    model = HookedModel(micro_model("gpt_neox", seed=2))
    windows = make_windows(_docs(), 16)
    cfg = ScanConfig(context_length=16, batch_size=4, top_k=3, n_intervals=2, per_interval=2, n_random=2)
    (a, tables), (b, _) = scan(model, windows, cfg), scan(model, windows, cfg)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model_dir = tmp_path / "model"
    model.model.save_pretrained(model_dir)
    meta = scan_meta("m", model_dir, model, cfg, windows, [f"d{i}" for i in range(9)])
    write_scan(tmp_path / "scan", a, windows, meta, tables)
    loaded = load_scan(tmp_path / "scan", model_dir=model_dir, expect={"context_length": 16})
    assert torch.equal(loaded.tensor("mlp.1", "top_values"), a["mlp.1.top_values"])
    assert loaded.window_max_table("mlp.1").shape == (len(windows.doc), model.d_mlp)
    with pytest.raises(ScanError, match="context_length=16, expected 32"):
        load_scan(tmp_path / "scan", expect={"context_length": 32})
    other = tmp_path / "other"
    micro_model("gpt_neox", seed=3, n_layers=2).save_pretrained(other)
    with pytest.raises(ScanError, match="different model"):
        load_scan(tmp_path / "scan", model_dir=other)
    with pytest.raises(ScanError, match="no complete scan"):
        load_scan(tmp_path / "nothing")
    loaded.check_unit("mlp.1", 3)
    with pytest.raises(ScanError, match="out of range"):
        loaded.check_unit("mlp.1", 10_000)


def test_compiled_batch_kernels_match_eager():
    from lmfeatures.scan.scan import batch_statistics

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(4, 8, 24, generator=g)
    valid = torch.ones(4, 8, dtype=torch.bool)
    valid[3, :5] = False
    inv_width = torch.full((24,), 8.0)
    acts[3, :5] = math.nan  # anything at invalid positions
    eager = batch_statistics(acts, valid, 0.5, inv_width)
    compiled = torch.compile(batch_statistics, dynamic=False)(acts, valid, 0.5, inv_width)
    for name, a, b in zip(["shift", "win_max", "win_arg", "sums", "max", "min", "bins"], eager, compiled):
        if name in ("shift", "sums"):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-4), name
        else:
            assert torch.equal(a, b), name


def test_every_positive_window_falls_in_exactly_one_interval():
    """Window maxima are stored as float16: one that rounds above the float32 unit max (here 1.0009
    -> 1.000977) must still land in the top interval, not in none."""
    import numpy as np

    from lmfeatures.scan.scan import _interval_samples

    rng = np.random.default_rng(0)
    unit_max = np.array([1.0009, 3.3, 0.7], dtype=np.float32)
    win_max = np.stack([rng.uniform(-1, 1, 40) * m for m in unit_max], axis=1).astype(np.float16)
    win_max[7] = unit_max.astype(np.float16)  # each unit's max window, in the stored precision
    assert win_max[7, 0] > unit_max[0]  # the rounding this test is about
    cfg = ScanConfig(n_intervals=4, per_interval=100)  # more than there are windows: all of them, no crash
    picked = _interval_samples(win_max, unit_max, cfg, np.random.default_rng(1))
    assert picked.shape == (4, 40, 3)
    for u in range(3):
        chosen = [w for w in picked[:, :, u].flatten().tolist() if w >= 0]
        assert sorted(chosen) == sorted(set(chosen))  # no window in two intervals
        assert set(chosen) == set(np.nonzero(win_max[:, u] > 0)[0].tolist())  # every positive window in one
        assert 7 in picked[-1, :, u]  # the max window is in the top interval


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_activation_stops_with_one_line(bad):
    model = HookedModel(micro_model("gpt_neox", seed=2))
    windows = make_windows(_docs(), 16)
    with torch.no_grad():  # the MLP output projection's input is mlp.1: poison one unit's input weights
        model.model.gpt_neox.layers[1].mlp.dense_h_to_4h.weight[5] = bad
    with pytest.raises(ScanError) as info:
        scan(model, windows, ScanConfig(context_length=16, batch_size=4), desc="scan micro")
    message = str(info.value)
    assert "\n" not in message and message.startswith("scan micro: hook mlp.1, unit 5, window 0:")


@pytest.mark.parametrize("cap", [1, 2])
def test_top_k_per_document_cap_equals_brute_force(cap):
    """The top-k under 'at most cap windows per document' equals sorting every window by its max
    and keeping, in order, those whose document has fewer than cap kept."""
    model = HookedModel(micro_model("gpt_neox", seed=3))
    windows = make_windows(_docs(vocab=64), 8)  # many windows per long document
    cfg = ScanConfig(context_length=8, batch_size=3, top_k=6, max_per_document=cap)
    result, _ = scan(model, windows, cfg)
    acts, valid = _brute_force(model, windows, "mlp.1", cfg.batch_size)
    win_max = acts.masked_fill(~valid[..., None], -math.inf).max(1).values  # [windows, units]
    for u in range(win_max.shape[1]):
        kept, per_doc = [], {}
        for w in sorted(range(len(win_max)), key=lambda w: -float(win_max[w, u])):
            d = int(windows.doc[w])
            if per_doc.get(d, 0) < cap:
                per_doc[d] = per_doc.get(d, 0) + 1
                kept.append(w)
        kept = kept[:6]
        got = result["mlp.1.top_window"][:, u].tolist()
        assert torch.equal(result["mlp.1.top_values"][: len(kept), u], win_max[kept, u])
        assert sorted(w for w in got if w >= 0) == sorted(kept)
        docs = [int(windows.doc[w]) for w in got if w >= 0]
        assert max(docs.count(d) for d in docs) <= cap
    n_docs = len(set(windows.doc.tolist()))
    if n_docs * cap < 6:  # fewer allowed windows than k: the rest of the top-k stays empty
        assert (result["mlp.1.top_window"][n_docs * cap :] == -1).all()


def test_context_only_positions_never_count_even_when_not_finite():
    from lmfeatures.scan.scan import _Accumulator

    acts = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, :2] = False  # the overlap of a document's last window
    acc, clean = _Accumulator(3, 2, 0.5, torch.device("cpu")), _Accumulator(3, 2, 0.5, torch.device("cpu"))
    poisoned = acts.clone()
    poisoned[1, 0, 1], poisoned[1, 1, 2] = math.nan, math.inf
    ids, docs = torch.tensor([0, 1]), torch.tensor([0, 0])
    assert torch.equal(acc.update(poisoned, valid, ids, docs), clean.update(acts, valid, ids, docs))
    for k, v in acc.stats().items():
        assert torch.equal(v, clean.stats()[k]), k
    assert torch.equal(acc.hist, clean.hist)


@pytest.mark.parametrize("cap", [None, 1])
def test_a_scan_in_shards_merges_into_the_single_scan(cap):
    """Shards over consecutive window ranges, merged: integer fields, extremes, histograms, samples and
    tables exact (ties in the top-k go to the earlier window either way), moments to float rounding.
    Vocabulary 4: block 0 sees only the current token, so many windows tie."""
    from lmfeatures.scan.scan import finish_scan, merge_parts, scan_part, shard_range

    assert [shard_range(10, s, 3, 2) for s in range(3)] == [(0, 2), (2, 6), (6, 10)]  # whole batches
    assert shard_range(3, 0, 3, 2) == (0, 0)  # 2 batches for 3 shards: one is empty

    model = HookedModel(micro_model("gpt_neox", seed=1))
    windows = make_windows(_docs(vocab=4), 8)
    cfg = ScanConfig(context_length=8, batch_size=3, top_k=5, max_per_document=cap, kinds=["mlp", "resid"], n_random=4)
    single, single_tables = scan(model, windows, cfg)
    parts, tables = [], {}
    for shard in [2, 0, 1]:  # any order: merged by window range
        part, part_tables = scan_part(model, windows, cfg, rows=shard_range(len(windows.doc), shard, 3, cfg.batch_size))
        parts.append(part)
        for hook, table in part_tables.items():
            tables.setdefault(hook, np.empty_like(single_tables[hook]))[part.start : part.stop] = table
    merged = finish_scan(merge_parts(parts, cfg), tables, cfg)
    assert merged.keys() == single.keys()
    assert torch.equal(single["mlp.0.top_values"][0], single["mlp.0.top_values"][1])  # the ties this test is about
    for name, value in single.items():
        if name.rsplit(".", 1)[-1] in ("mean", "var", "skew", "kurtosis"):
            assert torch.allclose(merged[name], value, rtol=1e-6, atol=1e-7), name  # float64 merges, other order
        else:
            assert torch.equal(merged[name], value), name
    for hook, table in single_tables.items():
        assert np.array_equal(tables[hook], table)
    with pytest.raises(ScanError, match="do not follow each other"):
        merge_parts([parts[0], parts[1]], cfg)  # shards 2 and 0
