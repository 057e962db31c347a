import math

import pytest
import torch

from lmfeatures.lm.models import family_config, init_model
from lmfeatures.lm.tokens import tokenize_texts
from lmfeatures.lm.train import TrainConfig, heldout_loss, lm_loss, lr_at, train, window_starts

ENTRY = {"name": "t", "n_layers": 1, "d_model": 32, "n_heads": 2, "d_mlp": 64}


def _model(tok, seed=0, arch="gpt_neox"):
    return init_model(family_config({**ENTRY, "architecture": arch}, len(tok), 32, tok.eos_token_id), seed)


def test_lm_loss_matches_hand_cross_entropy(small_tokenizer):
    model = _model(small_tokenizer)
    ids = torch.randint(0, len(small_tokenizer), (2, 6), generator=torch.Generator().manual_seed(1))
    logits = model(input_ids=ids).logits
    logp = logits.log_softmax(-1)
    hand = -sum(logp[b, i, ids[b, i + 1]] for b in range(2) for i in range(5)) / 10
    assert torch.allclose(lm_loss(model, ids), hand, atol=1e-5)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, steps=14, min_lr_fraction=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.25) and lr_at(3, cfg) == pytest.approx(1.0)
    assert lr_at(4, cfg) == pytest.approx(1.0)
    assert lr_at(9, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(14, cfg) == pytest.approx(0.1)


def test_window_order_depends_on_seed_only():
    a = window_starts(1000, TrainConfig(steps=5, batch_size=3, context_length=16, seed=3))
    b = window_starts(1000, TrainConfig(steps=5, batch_size=3, context_length=16, seed=3, lr=9.0))
    c = window_starts(1000, TrainConfig(steps=5, batch_size=3, context_length=16, seed=4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.max()) <= 1000 - 16
    with pytest.raises(ValueError, match="fewer than one window"):
        window_starts(10, TrainConfig(context_length=16))


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2", "llama"])
def test_training_lowers_loss_and_is_bitwise_reproducible(small_corpus, small_tokenizer, arch):
    tok = small_tokenizer
    train_split = tokenize_texts(tok, small_corpus[0]["train"]["text"])
    heldout = tokenize_texts(tok, small_corpus[0]["heldout"]["text"])
    cfg = TrainConfig(context_length=32, batch_size=8, steps=25, warmup_steps=3, eval_tokens=2000, log_every=5)
    torch.use_deterministic_algorithms(True)
    runs = []
    for _ in range(2):
        model = _model(tok, arch=arch)
        before = heldout_loss(model, heldout, tok.eos_token_id, cfg)["heldout_loss"]
        history = train(model, train_split, tok.eos_token_id, cfg)
        runs.append((model, history, before, heldout_loss(model, heldout, tok.eos_token_id, cfg)["heldout_loss"]))
    (m1, h1, before, after), (m2, h2, _, after2) = runs
    assert after < before - 0.5
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2] and after == after2
    for (n1, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p1, p2), n1


def test_untrained_twin_is_the_trained_models_start(small_tokenizer):
    a, b = _model(small_tokenizer, seed=5), _model(small_tokenizer, seed=5)
    c = _model(small_tokenizer, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_zero_steps_leaves_the_initialisation(small_corpus, small_tokenizer):
    """training.steps 0 (config/scale.yaml): a model of the family's shape with its random weights."""
    tok = small_tokenizer
    model, start = _model(tok, seed=5), _model(tok, seed=5)
    history = train(
        model, tokenize_texts(tok, small_corpus[0]["train"]["text"]), tok.eos_token_id, TrainConfig(steps=0)
    )
    assert history == [] and not model.training
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start.parameters()))
