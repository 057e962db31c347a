"""SAE training, evaluation and SAELens layout: planted dictionary, hand computations, splicing."""

import math
import os

import numpy as np
import pytest
import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.dictionary_checks import other_run
from lmfeatures.sae.evaluate import collect_activations, counted_tokens, evaluate_sae, valid_positions
from lmfeatures.sae.sae import (
    ReconstructionStats,
    SAEConfig,
    SAEError,
    SparseAutoencoder,
    _SelectedPre,
    _SparseDecode,
    from_sae_lens_files,
    input_scale,
    loss_recovered,
    sae_lens_files,
    train_sae,
)
from lmfeatures.scan.scan import make_windows
from lmfeatures.stages.sae import run_config
from lmfeatures.store.sae import activation_file, load_sae, save_sae


def planted(n=120_000, d=32, m=128, active=3, seed=0):
    """Activations that are sparse sums of m known unit directions in d dims: (x [n, d], D [m, d])."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(m, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    which = torch.rand(n, m, generator=g).argsort(1)[:, :active]
    z = torch.zeros(n, m).scatter_(1, which, torch.rand(n, active, generator=g) + 0.5)
    return z @ directions, directions


def test_topk_sae_recovers_a_planted_dictionary():
    x, directions = planted()
    cfg = SAEConfig(expansion=8, k=3, tokens=240_000, batch_size=512, lr=3e-3, dead_tokens=30_000, max_dead_share=0.9)
    sae, log = train_sae(x, cfg)
    best_cos = (directions @ sae.W_dec.T).max(1).values
    assert (best_cos > 0.9).float().mean() >= 0.9
    assert log[-1]["fvu"] < 0.2 and log[-1]["l0"] == 3
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(sae.d_sae), atol=1e-5)  # unit decoder rows


def test_training_is_seeded_and_the_input_scale_is_folded_exactly():
    x, _ = planted(n=20_000)
    cfg = SAEConfig(expansion=4, k=3, tokens=8192, batch_size=512, max_dead_share=1.0, seed=3)
    a, _ = train_sae(x, cfg)
    again, _ = train_sae(x, cfg)
    assert torch.equal(a.W_enc, again.W_enc) and torch.equal(a.b_dec, again.b_dec)
    # inputs are normalised before training, so 10x the data trains the same SAE with biases and
    # feature activations 10x: the fold into raw units is exact
    big, _ = train_sae(10 * x, cfg)
    assert torch.allclose(big.W_dec, a.W_dec, atol=1e-4)
    assert torch.allclose(big.b_dec, 10 * a.b_dec, rtol=1e-3, atol=1e-4)
    assert torch.allclose(big.encode(10 * x[:100]), 10 * a.encode(x[:100]), rtol=1e-3, atol=1e-3)


def test_input_scale_by_hand():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # mean |x|^2 = 12.5, d_in = 2
    assert input_scale(x) == pytest.approx(math.sqrt(2 / 12.5))


def test_topk_encode_is_relu_of_the_k_largest_pre_activations():
    sae = SparseAutoencoder(3, 5, "topk", k=2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3, 5))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, 0.0, 0.5, -1.0]))
    z = sae.encode(torch.tensor([[2.0, -1.0, 1.0]]))  # pre = [2, -1, 1, 0.5, -1]
    assert z.tolist() == [[2.0, 0.0, 1.0, 0.0, 0.0]]
    negative = sae.encode(torch.tensor([[-2.0, -3.0, -4.0]]))  # the top 2 are 0.5 and -1 -> [0, 0, 0, 0.5, 0]
    assert negative.tolist() == [[0.0, 0.0, 0.0, 0.5, 0.0]]


def test_sparse_gradients_match_dense_autograd():
    torch.manual_seed(0)
    b, d, m, k = 6, 4, 10, 3
    x = torch.randn(b, d, dtype=torch.float64)
    w_enc = torch.randn(d, m, dtype=torch.float64, requires_grad=True)
    b_enc = torch.randn(m, dtype=torch.float64, requires_grad=True)
    b_dec = torch.randn(d, dtype=torch.float64, requires_grad=True)
    w_dec = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
    indices = ((x - b_dec) @ w_enc + b_enc).topk(k).indices.detach()

    def sparse(b_dec, w_enc, b_enc, w_dec):
        pre = ((x - b_dec) @ w_enc + b_enc).detach()
        values = _SelectedPre.apply(x, b_dec, w_enc, b_enc, indices, pre)
        return _SparseDecode.apply(values, indices, w_dec)

    def dense(b_dec, w_enc, b_enc, w_dec):
        pre = (x - b_dec) @ w_enc + b_enc
        z = torch.zeros_like(pre).scatter(1, indices, pre.gather(1, indices))
        return z @ w_dec

    inputs = (b_dec, w_enc, b_enc, w_dec)
    assert torch.allclose(sparse(*inputs), dense(*inputs))
    g = torch.randn(b, d, dtype=torch.float64)
    grads = torch.autograd.grad((sparse(*inputs) * g).sum(), inputs)
    expected = torch.autograd.grad((dense(*inputs) * g).sum(), inputs)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want)


def test_relu_sae_tunes_its_l1_coefficient_to_the_target_l0():
    x, _ = planted(n=40_000)
    cfg = SAEConfig(architecture="relu", expansion=4, k=8, tokens=200_000, batch_size=512, max_dead_share=1.0)
    _, log = train_sae(x, cfg)
    assert abs(log[-1]["l0"] - 8) < 3  # started near half of 128 features
    assert log[-1]["l1_coefficient"] != cfg.l1_coefficient


def test_bad_settings_and_non_finite_activations_are_one_line_errors():
    x, _ = planted(n=2000)
    with pytest.raises(SAEError, match="k 200 must be between 1 and d_sae - 1 = 127"):
        train_sae(x, SAEConfig(expansion=4, k=200))
    bad = x.clone()
    bad[1234, 3] = math.nan
    with pytest.raises(SAEError, match="activation row 1234 has NaN or Inf"):
        train_sae(bad, SAEConfig(expansion=4, k=3, tokens=1024))
    with pytest.raises(SAEError, match="were dead at the end of training"):
        train_sae(x, SAEConfig(expansion=4, k=1, tokens=2048, batch_size=512, dead_tokens=512, max_dead_share=0.0))


def test_reconstruction_stats_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x_hat = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.5, 0.0]])
    stats = ReconstructionStats(2, 3, dense_density=0.5)
    stats.update(x[:2], x_hat[:2], z[:2])
    stats.update(x[2:], x_hat[2:], z[2:])
    result = stats.result()
    # mean = (2/3, 2/3); total variance = sum |x - mean|^2 = 4/3; error = 1
    assert result["explained_variance"] == pytest.approx(1 - 1 / (4 / 3))
    assert result["mse"] == pytest.approx(1 / 6)
    assert result["l0"] == pytest.approx(1.0)  # 1 + 0 + 2 active over 3 tokens
    assert result["dead_share"] == pytest.approx(1 / 3) and result["dense_share"] == pytest.approx(1 / 3)
    assert result["density"].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert loss_recovered(clean=2.0, spliced=2.5, zero_ablated=4.0) == pytest.approx(0.75)


def _identity_sae(d: int) -> SparseAutoencoder:
    """A ReLU SAE that reconstructs any x exactly: z = [relu(x), relu(-x)], x̂ = relu(x) - relu(-x)."""
    sae = SparseAutoencoder(d, 2 * d, "relu")
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    return sae.requires_grad_(False)


def test_spliced_cross_entropy_on_a_micro_model():
    model = micro_model("gpt_neox", seed=0)
    hooked = HookedModel(model)
    ids = torch.randint(0, hooked.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    windows = make_windows([row.tolist() for row in ids], 16)
    result = evaluate_sae(hooked, _identity_sae(hooked.d_mlp), 0, windows)
    assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-5)
    assert result["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert result["explained_variance"] == pytest.approx(1.0, abs=1e-6)

    def mean_nll(m):
        logits = m(ids).logits[:, :-1].float()
        return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()))

    with torch.no_grad():
        assert result["ce_clean"] == pytest.approx(mean_nll(model), rel=1e-5)
        model.gpt_neox.layers[0].mlp.dense_4h_to_h.weight.zero_()  # test-only: zero input to W_out = zero W_out
        assert result["ce_zero_ablated"] == pytest.approx(mean_nll(model), rel=1e-5)


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_sae_lens_layout_round_trip(tmp_path, architecture):
    torch.manual_seed(0)
    sae = SparseAutoencoder(8, 32, architecture, k=4)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    cfg, tensors = sae_lens_files(sae, "mlp.0")
    assert cfg["metadata"]["hook_name"] == "mlp.0" and cfg["metadata"]["sae_lens_version"]
    assert tensors["W_enc"].shape == (8, 32) and tensors["W_dec"].shape == (32, 8)
    back = from_sae_lens_files(cfg, tensors)
    x = torch.randn(5, 8)
    assert torch.equal(back(x), sae(x))

    model = HookedModel(micro_model("gpt_neox", seed=0))
    save_sae(tmp_path, SparseAutoencoder(model.d_mlp, 16, architecture, k=4), "mlp.1", "micro", {})
    assert load_sae(tmp_path, model)[1] == "mlp.1"
    save_sae(tmp_path, sae, "mlp.0", "micro", {})  # d_in 8: not this model's d_mlp
    with pytest.raises(SAEError, match=f"reads 8 dimensions, but mlp.0 of this model has {model.d_mlp}"):
        load_sae(tmp_path, model)
    save_sae(tmp_path, sae, "mlp.9", "micro", {})
    with pytest.raises(SAEError, match="its hook 'mlp.9' does not fit this model"):
        load_sae(tmp_path, model)


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_sae_lens_loads_our_files_and_gives_the_same_outputs(tmp_path, architecture):
    if os.environ.get("CI"):  # scripts/test.sh installs it: in CI this test must run, not skip
        import sae_lens
    else:
        sae_lens = pytest.importorskip("sae_lens", reason="optional test extra: pip install -e .[saelens]")
    torch.manual_seed(0)
    sae = SparseAutoencoder(8, 32, architecture, k=4)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    save_sae(tmp_path, sae, "mlp.0", "micro", {})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path))
    assert theirs.cfg.metadata.hook_name == "mlp.0"
    x = torch.randn(20, 8)
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), sae.encode(x), atol=1e-5)
        assert torch.allclose(theirs.decode(sae.encode(x)), sae.decode(sae.encode(x)), atol=1e-5)


def test_run_names():
    params = {
        "seeds": [5, 7],
        "architecture": "topk",
        "expansion": 4,
        "k": 3,
        "lr": 1e-3,
        "relu_lr": 3e-3,
        "batch_size": 64,
        "tokens": 1000,
        "dead_tokens": 100,
        "max_dead_share": 0.5,
    }
    assert run_config("B", params).seed == 7 and not run_config("B", params).frozen_decoder
    assert run_config("random-A", params).frozen_decoder and run_config("random-A", params).seed == 5
    assert run_config("relu-A", params).architecture == "relu" and run_config("relu-A", params).lr == 3e-3
    assert run_config("random-A", params).lr == run_config("A", params).lr == 1e-3
    assert (other_run("A"), other_run("B"), other_run("random-B"), other_run("C")) == ("B", "A", "random-A", "A")


def test_random_baseline_keeps_its_decoder():
    x, _ = planted(n=10_000)
    cfg = SAEConfig(expansion=4, k=3, tokens=4096, batch_size=512, frozen_decoder=True, max_dead_share=1.0, seed=1)
    sae, _ = train_sae(x, cfg)
    g = torch.Generator().manual_seed(1)
    torch.randperm(len(x), generator=g)  # train_sae's draws before the decoder: the data-mean sample
    w = torch.randn(sae.d_sae, sae.d_in, generator=g)
    assert torch.allclose(sae.W_dec, w / w.norm(dim=1, keepdim=True))


def test_windows_are_a_seeded_sample_of_the_whole_split(small_tokenizer):
    """The landed windows were the split's first documents (a corpus sorted by path: a few modules)."""
    from lmfeatures.sae.evaluate import text_windows

    texts = [f"def function_{i}(x):\n    return x * {i} + {i * 7}\n" * (2 + i % 5) for i in range(60)] + ["x"]
    docs = small_tokenizer(texts, add_special_tokens=False)["input_ids"]
    windows = text_windows(small_tokenizer, texts, 8, 8 * 30, seed=0)
    assert len(windows.ids) == 30 and (windows.valid_from == 0).all() and windows.skipped_short_docs == 1
    assert windows.doc.unique().numel() > 15 and windows.doc.max() > 45  # spread over the split, not its head
    for d, s, ids in zip(windows.doc.tolist(), windows.start.tolist(), windows.ids.tolist()):
        assert s % 8 == 0 and ids == docs[d][s : s + 8]
    pairs = list(zip(windows.doc.tolist(), windows.start.tolist()))
    assert pairs == sorted(set(pairs))  # no window twice, in document order
    assert torch.equal(text_windows(small_tokenizer, texts, 8, 8 * 30, seed=0).ids, windows.ids)
    assert not torch.equal(text_windows(small_tokenizer, texts, 8, 8 * 30, seed=1).ids, windows.ids)
    everything = text_windows(small_tokenizer, texts, 8, 10**9, seed=0)
    assert len(everything.ids) == sum(len(d) // 8 for d in docs)


def test_training_activations_stream_from_a_file_and_train_the_same_sae(tmp_path):
    """sae_train writes the activations into a file-backed tensor, not a [tokens, d_mlp] one in RAM:
    they are the counted tokens' activations, and the SAE trained on them is the one trained in RAM."""
    model = HookedModel(micro_model("gpt_neox", seed=0))
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, model.vocab_size, (n,), generator=g).tolist() for n in (40, 23, 16, 31)]
    windows = make_windows(docs, 16)  # tail windows overlap the one before: their first positions do not count
    n = counted_tokens(windows)
    assert n == sum(len(d) for d in docs) and (windows.valid_from > 0).any()
    in_ram = torch.empty(n, model.d_mlp, dtype=torch.float16)
    collect_activations(model, "mlp.1", windows, in_ram, batch_size=3)
    on_disk = activation_file(tmp_path / "acts.npy", n, model.d_mlp)
    collect_activations(model, "mlp.1", windows, on_disk, batch_size=3)
    with torch.no_grad():
        acts = model.run(["mlp.1"], input_ids=windows.ids)["mlp.1"]
    assert torch.equal(in_ram, acts[valid_positions(windows, slice(None), 16)].half())
    assert np.array_equal(np.load(tmp_path / "acts.npy"), in_ram.numpy())  # it is in the file
    cfg = SAEConfig(expansion=2, k=4, tokens=512, batch_size=32, max_dead_share=1.0)
    (a, log_a), (b, log_b) = train_sae(in_ram, cfg), train_sae(on_disk, cfg)
    assert log_a == log_b and all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
