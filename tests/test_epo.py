"""EPO against hand computations on micro models, a planted neuron, and determinism."""

import math

import pytest
import torch
import torch.nn.functional as F
from micro import micro_model
from planted import conjunction_model

from lmfeatures.epo.epo import (
    EPOConfig,
    EPOError,
    Scorer,
    UnitTarget,
    allowed_tokens,
    banned_token_mask,
    epo,
    pareto_front,
    retokenizes,
    xent,
)
from lmfeatures.lm.hooks import HookedModel


def test_pareto_front_by_hand():
    target = torch.tensor([1.0, 3.0, 2.0, 3.0, 0.5, 4.0, 2.5])
    x = torch.tensor([2.0, 4.0, 3.0, 5.0, 1.0, 7.0, 3.0])
    # sorted by xent: (0.5,1) (1,2) (2.5,3) (2,3) (3,4) (3,5) (4,7): front = 4, 0, 6, 1, 5
    assert pareto_front(target, x).tolist() == [4, 0, 6, 1, 5]
    brute = [
        i
        for i in range(7)
        if not any(
            (target[j] >= target[i]) and (x[j] <= x[i]) and ((target[j] > target[i]) or (x[j] < x[i])) for j in range(7)
        )
    ]
    assert sorted(pareto_front(target, x).tolist()) == brute


def test_xent_by_hand():
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 2, 3, 4], [0, 6, 6, 5]])
    logp = logits.log_softmax(-1)
    hand = torch.tensor([-sum(logp[b, i, ids[b, i + 1]].item() for i in range(3)) / 3 for b in range(2)])
    assert torch.allclose(xent(logits, ids), hand, atol=1e-6)


class _Tok:
    """A character tokenizer over 'a'..: id i <-> chr(97 + i); id 0 is a special token."""

    def __init__(self, n):
        self.n = n
        self.all_special_ids = [0]

    def __len__(self):
        return self.n

    def batch_decode(self, rows):
        return ["".join(chr(97 + i) for i in r) for r in rows]

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) - 97 for c in t] for t in texts]}


def test_banned_tokens_and_retokenization(small_tokenizer):
    mask = banned_token_mask(small_tokenizer, len(small_tokenizer) + 5)
    assert mask[len(small_tokenizer) :].all() and mask[small_tokenizer.eos_token_id]
    assert int(mask.sum()) == 6
    # "d" + "ef" style splits: a sequence of pieces that re-encodes differently must fail
    good = torch.tensor([small_tokenizer("def f(x):", add_special_tokens=False)["input_ids"]])
    pieces = [small_tokenizer.convert_tokens_to_ids(c) for c in ("d", "e", "f")]
    bad = torch.tensor([pieces + good[0, 3:].tolist()])[:, : good.shape[1]]
    assert retokenizes(small_tokenizer, good).tolist() == [True]
    assert small_tokenizer.decode(bad[0]).startswith("def") and retokenizes(small_tokenizer, bad).tolist() == [False]


def test_one_hot_gradient_matches_autograd_on_embeddings():
    """d target / d onehot[i, v] = W_E[v] . d target / d embed[i]; for xent the one-hot is also the
    label, adding -log p(v | x_<i) / (n - 1) at every i >= 1 (the paper's formulation)."""
    model = HookedModel(micro_model("gpt_neox", seed=0))
    scorer = Scorer(model, UnitTarget("mlp.1", 3), batch_size=8)
    ids = torch.tensor([[5, 9, 2, 7], [1, 1, 3, 3]])
    t, x, g_t, g_x = scorer.gradients(ids)
    st, sx = scorer.score(ids)
    assert torch.allclose(t, st, atol=1e-5) and torch.allclose(x, sx, atol=1e-5)
    emb = model.embed(ids).detach().requires_grad_(True)
    out = model.run(["mlp.1"], inputs_embeds=emb, return_logits=True)
    (g_emb,) = torch.autograd.grad(out["mlp.1"][:, -1, 3].sum(), emb, retain_graph=True)
    assert torch.allclose(g_t, g_emb @ model.embedding_matrix().T, atol=1e-5)
    (g_x_emb,) = torch.autograd.grad(xent(out["logits"], ids).sum(), emb)
    label = torch.zeros_like(g_x)
    label[:, 1:] = -torch.log_softmax(out["logits"][:, :-1].detach(), -1) / (ids.shape[1] - 1)
    assert torch.allclose(g_x, g_x_emb @ model.embedding_matrix().T + label, atol=1e-5)
    assert (g_x - g_x_emb @ model.embedding_matrix().T).abs().max() > 0.1  # the label term is not small here


def test_xent_gradient_by_finite_differences():
    """The relaxed xent(onehot) = xent_of_onehot(logits(onehot @ W_E), onehot), differentiated numerically."""
    from lmfeatures.epo.epo import xent_of_onehot

    model = HookedModel(micro_model("gpt_neox", seed=1).double())
    scorer = Scorer(model, UnitTarget("mlp.0", 2), batch_size=8)
    ids = torch.tensor([[4, 8, 15, 16, 23]])
    _, _, _, g_x = scorer.gradients(ids)
    onehot = F.one_hot(ids, model.vocab_size).double()

    def relaxed(oh):
        with torch.no_grad():
            return float(
                xent_of_onehot(
                    model.run([], inputs_embeds=oh @ model.embedding_matrix(), return_logits=True)["logits"], oh
                )
            )

    eps = 1e-3  # rotary tables stay float32: smaller steps drown in their rounding
    for i, v in [(0, 3), (2, 8), (4, 50), (3, 16)]:
        d = torch.zeros_like(onehot)
        d[0, i, v] = eps
        numeric = (relaxed(onehot + d) - relaxed(onehot - d)) / (2 * eps)
        assert abs(numeric - float(g_x[0, i, v])) < 1e-4 * max(1.0, abs(numeric)), (i, v, numeric)


def test_config_errors_before_compute(small_tokenizer):
    with pytest.raises(EPOError, match="top_k"):
        allowed_tokens(small_tokenizer, len(small_tokenizer), top_k=10_000)
    for bad in ({"lambda_min": 2, "lambda_max": 1}, {"restart_lambda": (3, 1)}, {"n_tokens": 1}):
        with pytest.raises(EPOError):
            EPOConfig(**bad)


def test_lambdas_log_spaced_and_gcg():
    lam = EPOConfig(population=5, lambda_min=0.1, lambda_max=10).lambdas()
    assert torch.allclose(lam, torch.tensor([0.1, 10**-0.5, 1.0, 10**0.5, 10.0]))
    assert EPOConfig(population=1, lambda_min=0, lambda_max=0).lambdas().tolist() == [0.0]


def test_planted_conjunction_is_found_where_random_search_fails():
    hm, (a, b) = conjunction_model()
    tok = _Tok(hm.vocab_size)
    scorer = Scorer(hm, UnitTarget("mlp.0", 0), batch_size=256)
    both, one = scorer.score(torch.tensor([[a, b], [b, a]]))[0], scorer.score(torch.tensor([[5, b], [a, 5], [b, b]]))[0]
    assert both.min() > 12.5 and one.max() < 8.5  # the planted conjunction, checked on the model itself
    cfg = EPOConfig(
        n_tokens=2,
        population=4,
        children=8,
        top_k=8,
        iterations=25,
        restart_every=10,
        lambda_min=0.01,
        lambda_max=0.1,
        seed=0,
    )
    found = epo(scorer, tok, cfg)
    assert float(found.target.max()) > 12.5
    assert set(found.ids[int(torch.argmax(found.target))].tolist()) == {a, b}
    assert not (found.ids == 0).any()  # the special token is never proposed
    seen = []
    epo(
        scorer,
        tok,
        EPOConfig(**{**cfg.__dict__, "proposal": "random"}),
        on_iteration=lambda r: seen.append(r["target"]),
    )
    assert sum(len(t) for t in seen) >= 700 and float(torch.cat(seen).max()) < 8.5  # same budget, no conjunction


def test_determinism_same_seed_same_history():
    hm = HookedModel(micro_model("gpt_neox", seed=4))
    tok = _Tok(hm.vocab_size)
    cfg = EPOConfig(n_tokens=5, population=3, children=4, top_k=6, iterations=8, restart_every=4, seed=3)

    def run(c):
        hist = []
        state = epo(
            Scorer(hm, UnitTarget("mlp.1", 2, position="max"), batch_size=16),
            tok,
            c,
            on_iteration=lambda r: hist.append((r["ids"].tolist(), r["target"].tolist(), r["restart"])),
        )
        return hist, state

    (h1, s1), (h2, s2) = run(cfg), run(cfg)
    assert h1 == h2 and torch.equal(s1.ids, s2.ids)
    assert h1[3][2] is not None and 0.667 <= h1[3][2] <= 6.0  # the restart lambda is drawn and recorded
    h3, _ = run(EPOConfig(**{**cfg.__dict__, "seed": 4}))
    assert h3 != h1


def test_resume_from_state_equals_uninterrupted_run():
    hm = HookedModel(micro_model("gpt_neox", seed=4))
    tok = _Tok(hm.vocab_size)
    target = UnitTarget("mlp.0", 1)
    cfg = EPOConfig(n_tokens=4, population=3, children=4, top_k=6, iterations=6, restart_every=3, seed=1)
    full = epo(Scorer(hm, target, batch_size=16), tok, cfg)
    half = epo(Scorer(hm, target, batch_size=16), tok, EPOConfig(**{**cfg.__dict__, "iterations": 4}))
    resumed = epo(Scorer(hm, target, batch_size=16), tok, cfg, state=half)
    assert torch.equal(full.ids, resumed.ids) and torch.equal(full.target, resumed.target)


def test_random_baseline_and_without_replacement_share_the_loop():
    hm = HookedModel(micro_model("gpt_neox", seed=4))
    tok = _Tok(hm.vocab_size)
    scorer = Scorer(hm, UnitTarget("mlp.0", 1), batch_size=16)
    rnd = epo(scorer, tok, EPOConfig(n_tokens=4, population=3, children=4, iterations=3, proposal="random", top_k=4))
    assert rnd.iteration == 3
    worep = epo(
        scorer, tok, EPOConfig(n_tokens=4, population=4, children=4, top_k=4, iterations=3, with_replacement=False)
    )
    # without replacement every slot holds a different prompt
    assert len({tuple(r) for r in worep.ids.tolist()}) == 4


def test_children_take_tokens_from_the_slot_objectives_top_k():
    """Every child that differs from its parent differs in exactly one position, by a token of that
    slot's top-k of d proposal - lambda_j d xent there (banned tokens excluded), computed here by
    hand from the two gradients; with k = 1 it is the argmax."""
    from lmfeatures.epo.epo import EPOState, _gradient_children

    hm = HookedModel(micro_model("gpt_neox", seed=5))
    scorer = Scorer(hm, UnitTarget("mlp.1", 4), batch_size=16)
    ids = torch.tensor([[3, 8, 9, 4], [3, 8, 9, 4], [7, 1, 2, 5]])  # two slots share a prompt
    t, x = scorer.score(ids)
    lambdas = torch.tensor([0.0, 5.0, 1.0])
    banned = torch.zeros(hm.vocab_size, dtype=torch.bool)
    banned[0] = True
    _, _, g_t, g_x = scorer.gradients(ids)
    for k in (1, 3):
        cfg = EPOConfig(n_tokens=4, population=3, children=12, top_k=k)
        gen = torch.Generator().manual_seed(k)
        children, slot, pos = _gradient_children(scorer, EPOState(0, ids, t, x), cfg, lambdas, banned, gen)
        assert torch.equal(slot, torch.arange(3).repeat_interleave(12))
        assert all(c[p] == ids[s][p] or (c != ids[s]).sum() == 1 for c, s, p in zip(children, slot, pos))
        children = children.view(3, 12, 4)
        n_changed = 0
        for j in range(3):
            top = (g_t[j] - lambdas[j] * g_x[j]).masked_fill(banned, -math.inf).topk(k, dim=-1).indices  # [n, k]
            for child in children[j]:
                changed = (child != ids[j]).nonzero().flatten().tolist()
                if changed:
                    n_changed += 1
                    assert len(changed) == 1
                    assert int(child[changed[0]]) in top[changed[0]].tolist()
        assert n_changed >= 24  # most children are new prompts
    # slots 0 and 1 hold the same prompt but different lambdas: their proposals differ
    assert not torch.equal((g_t[0] - 0.0 * g_x[0]).argmax(-1), (g_t[1] - 5.0 * g_x[1]).argmax(-1))


def test_stage_inputs_are_checked_before_compute(tmp_path, small_corpus, small_tokenizer):
    from lmfeatures.lm.tokenizer import TokenizerConfig, train_tokenizer
    from lmfeatures.stages.epo import build_scorer

    def save(name, tok):
        path = tmp_path / name
        micro_model("gpt_neox", vocab_size=len(tok)).save_pretrained(path)
        tok.save_pretrained(path)
        return str(path)

    main = save("main", small_tokenizer)
    other = save("other", train_tokenizer(small_corpus[0]["train"], TokenizerConfig(vocab_size=300)))
    params = {"n_tokens": 4}
    scorer, tok = build_scorer(main, "L1N3", params, "cpu")
    assert scorer.target.hook == "mlp.1" and scorer.target.index == 3
    with pytest.raises(EPOError, match="index 999 is outside layer 1"):
        build_scorer(main, "L1N999", params, "cpu")
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        build_scorer(main, "L7N0", params, "cpu")
    with pytest.raises(EPOError, match="different tokenizer"):
        build_scorer(main, "L1N3", params, "cpu", fluency_dir=other)


def test_auto_batch_size_scales_with_the_prompt_length():
    from lmfeatures.epo.epo import auto_batch_size

    model = HookedModel(micro_model("gpt_neox", seed=0, vocab_size=50_000))
    short, long = auto_batch_size(model, None, 4), auto_batch_size(model, None, 64)
    assert 16 <= long <= short <= 1024 and (long < short or short == 1024)


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("call_positions", [0, 8])  # every position its own group; groups of several
def test_children_scored_from_the_parents_cache_equal_full_scores(arch, call_positions, monkeypatch):
    """Reusing a parent's keys, values and NLL up to the changed position gives score() exactly,
    with slots that share a parent, and when every child changed at the same position."""
    import lmfeatures.epo.epo as epo_module

    monkeypatch.setattr(epo_module, "CALL_POSITIONS", call_positions)
    hm = HookedModel(micro_model(arch, seed=1))
    scorer = Scorer(hm, UnitTarget("mlp.2", 3), batch_size=5)  # several batches per position group
    g = torch.Generator().manual_seed(0)
    parents = torch.randint(1, 64, (3, 6), generator=g)
    parents = torch.cat([parents, parents[:1]])  # slots 0 and 3 hold the same prompt
    parent_of, spread = torch.randint(0, 4, (30,), generator=g), torch.randint(0, 6, (30,), generator=g)
    assert set(parent_of.tolist()) == set(range(4)) and set(spread.tolist()) == set(range(6))
    n_groups = len(epo_module._position_groups(spread, 6))
    assert n_groups == 6 if call_positions == 0 else 1 < n_groups < 6
    for changed in (spread, torch.full((30,), 4)):
        kids = parents[parent_of].clone()
        kids[torch.arange(30), changed] = torch.randint(1, 64, (30,), generator=g)
        full_t, full_x = scorer.score(kids)
        t, x = scorer.score_children(parents, kids, parent_of, changed)
        assert torch.allclose(t, full_t, atol=1e-5) and torch.allclose(x, full_x, atol=1e-5)


def test_position_groups_are_the_cheapest_split_by_brute_force(monkeypatch):
    """The groups cover every child once, each from its smallest position, and no split of the
    positions into consecutive groups costs less (all 2^(n-1) splits tried)."""
    import itertools

    import lmfeatures.epo.epo as epo_module

    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(2, 8, (), generator=g))
        monkeypatch.setattr(epo_module, "CALL_POSITIONS", float(torch.randint(0, 40, (), generator=g)))
        changed = torch.randint(0, n, (int(torch.randint(1, 40, (), generator=g)),), generator=g)
        groups = epo_module._position_groups(changed, n)
        covered = torch.cat([rows for _, rows in groups])
        assert sorted(covered.tolist()) == list(range(len(changed)))
        assert all(int(changed[rows].min()) == q for q, rows in groups)

        def cost(split, n=n, changed=changed):
            return sum(epo_module.CALL_POSITIONS + (n - int(changed[r].min())) * len(r) for _, r in split)

        counts = torch.bincount(changed, minlength=n)
        occurring = [p for p in range(n) if counts[p]]
        best = math.inf
        for cuts in itertools.product([False, True], repeat=len(occurring) - 1):
            bounds, lo = [], occurring[0]
            for p, cut in zip(occurring[1:], cuts):
                if cut:
                    bounds.append((lo, p))
                    lo = p
            bounds.append((lo, n))
            split = [(lo, torch.nonzero((changed >= lo) & (changed < hi)).flatten()) for lo, hi in bounds]
            best = min(best, cost(split))
        assert cost(groups) == best


def test_member_stats_are_computed_once_per_member_and_equal_fresh_gradients(monkeypatch):
    """A prompt that stays in the population costs no second gradient pass, and what is reused
    equals a fresh computation: its gradients, and its log-probs from a forward of its own."""
    hm = HookedModel(micro_model("gpt_neox", seed=2))
    scorer = Scorer(hm, UnitTarget("mlp.1", 5), batch_size=8, proposal=UnitTarget("mlp_pre.1", 5))
    passes = []
    real_pass = scorer._gradient_pass

    def counting_pass(ids, keep_prefix):
        passes.append(len(ids))
        return real_pass(ids, keep_prefix)

    monkeypatch.setattr(scorer, "_gradient_pass", counting_pass)
    g = torch.Generator().manual_seed(1)
    a, b, c = torch.randint(1, 64, (3, 5), generator=g)
    scorer.member_stats(torch.stack([a, b, a]))
    stats = scorer.member_stats(torch.stack([b, c, c]))  # only c is new; a is forgotten
    scorer.member_stats(torch.stack([a]))  # a again: computed afresh
    assert passes == [2, 1, 1]
    _, _, g_p, g_x, _, _ = real_pass(torch.stack([b, c]), keep_prefix=False)
    assert torch.allclose(stats[0].grad_proposal, g_p[0], atol=1e-6)
    assert torch.allclose(stats[2].grad_xent, g_x[1], atol=1e-6)
    with torch.no_grad():
        logits = hm.run([], input_ids=c[None], return_logits=True)["logits"]
    assert torch.allclose(stats[1].logp, torch.log_softmax(logits[0, :-1], -1), atol=1e-5)


def test_a_population_still_trapped_at_a_restart_is_redrawn_at_random():
    """With a target that is never positive, every restart draws fresh random prompts, which are
    scored, recorded as the iteration's last candidates and become the whole population."""

    class NeverPositive(UnitTarget):
        def __call__(self, acts):
            return -super().__call__(acts).abs() - 1.0

    hm = HookedModel(micro_model("gpt_neox", seed=4))
    scorer = Scorer(hm, NeverPositive("mlp.1", 2), batch_size=32)
    cfg = EPOConfig(n_tokens=4, population=3, children=4, top_k=6, iterations=8, restart_every=4, seed=2)
    records = []
    state = epo(scorer, _Tok(hm.vocab_size), cfg, on_iteration=records.append)
    assert [r["iteration"] for r in records if r["reinitialised"]] == [4, 8]
    last = records[-1]
    fresh = last["ids"][-cfg.population :]
    assert torch.equal(state.ids.cpu(), fresh) and last["kept"][-cfg.population :].tolist() == [1, 1, 1]
    assert not any(r["reinitialised"] for r in records if r["iteration"] % 4)
    # a target that is positive somewhere collapses onto its best prompt instead
    positive = []
    epo(
        scorer.__class__(hm, UnitTarget("mlp.1", 2), batch_size=32),
        _Tok(hm.vocab_size),
        cfg,
        on_iteration=positive.append,
    )
    assert not any(r["reinitialised"] for r in positive) or max(float(r["target"].max()) for r in positive) <= 0
