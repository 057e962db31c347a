"""EPO throughput against bare model passes over the same candidates, on the default EPO model.

No arguments; under two minutes on 2 cores. Uses the first model of `epo.models` in
config/config.yaml when it is under results/models/ (else a model of the same shape with random
weights and a byte-level tokenizer trained on a slice of the corpus), with the config's EPO
settings. The bare reference does, per iteration, what EPO cannot avoid: one batched forward with
logits over the same number of candidates, plus one forward + backward through one-hot inputs
for the population. Also prints what scoring children from their parents' caches saves over
scoring them in full (the same children, changed at uniform positions as EPO changes them).
Prints `epo/bare time ratio: X` last.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lmfeatures.config import load_config, model_entry
from lmfeatures.epo.epo import EPOConfig, Scorer, UnitTarget, auto_batch_size, epo, method_config
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import family_config, init_model
from lmfeatures.store.models import load_model

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 60


def default_model():
    config = load_config(REPO / "config" / "config.yaml")
    name = (config["epo"]["models"] or [m["name"] for m in config["models"]])[0]
    path = REPO / config["results"] / "models" / name
    if (path / "config.json").is_file():
        model, tok = load_model(path)
        return HookedModel(model), tok, config, f"{name} (trained, {path})"
    from lmfeatures.lm.corpus import CorpusConfig, build_corpus
    from lmfeatures.lm.tokenizer import TokenizerConfig, train_tokenizer

    dd, _ = build_corpus(CorpusConfig(max_documents=200))
    tok = train_tokenizer(dd["train"], TokenizerConfig(vocab_size=config["tokenizer"]["vocab_size"]))
    entry = model_entry(config, name)
    cfg = family_config(entry, len(tok), config["training"]["context_length"], tok.eos_token_id)
    return HookedModel(init_model(cfg, 0)), tok, config, f"{name} shape with random weights"


def main() -> None:
    torch.set_num_threads(2)
    model, tok, config, label = default_model()
    params = {**config["epo"], "iterations": ITERATIONS}
    cfg: EPOConfig = method_config("epo", params, seed=0)
    batch_size = params.get("batch_size") or auto_batch_size(model, None, cfg.n_tokens)
    scorer = Scorer(model, UnitTarget("mlp.1", 0), batch_size=batch_size)
    history = []
    epo(scorer, tok, EPOConfig(**{**cfg.__dict__, "iterations": 2}))  # warm-up
    t0 = time.perf_counter()
    epo(scorer, tok, cfg, on_iteration=lambda r: history.append(len(r["ids"])))
    t_epo = time.perf_counter() - t0
    n_candidates = sum(history)

    state = epo(scorer, tok, EPOConfig(**{**cfg.__dict__, "iterations": 1}))
    gen = torch.Generator().manual_seed(0)
    m, n = state.ids.shape
    parent_of = torch.arange(m).repeat_interleave(cfg.children)
    changed = torch.randint(n, (len(parent_of),), generator=gen)
    children = state.ids[parent_of].clone()
    children[torch.arange(len(children)), changed] = torch.randint(1, len(tok), (len(children),), generator=gen)
    t_reuse = t_full = 0.0
    for _ in range(ITERATIONS // 4):
        t0 = time.perf_counter()
        scorer.score_children(state.ids, children, parent_of, changed)
        t_reuse += time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer.score(children)
        t_full += time.perf_counter() - t0

    per_iter = cfg.population * cfg.children
    w_e = model.embedding_matrix()

    def bare_iteration() -> None:
        cand = torch.randint(0, len(tok), (per_iter, cfg.n_tokens), generator=gen)
        with torch.no_grad():
            for b in range(0, per_iter, scorer.batch_size):
                model.model(input_ids=cand[b : b + scorer.batch_size], use_cache=False)
        members = cand[: cfg.population]
        onehot = F.one_hot(members, w_e.shape[0]).to(w_e.dtype).requires_grad_(True)
        logits = model.model(inputs_embeds=onehot @ w_e, use_cache=False).logits
        logits[:, -1, 0].sum().backward()

    bare_iteration()  # warm-up
    t0 = time.perf_counter()
    for _ in range(ITERATIONS):
        bare_iteration()
    t_bare = time.perf_counter() - t0
    print(
        f"model: {label}; EPO M={cfg.population} r={cfg.children} k={cfg.top_k} n={cfg.n_tokens}; "
        f"{ITERATIONS} iterations; batch size {scorer.batch_size}"
    )
    print(
        f"EPO: {n_candidates} new candidates scored ({n_candidates / t_epo:,.0f} / s), "
        f"{1000 * t_epo / ITERATIONS:.1f} ms / iteration"
    )
    print(
        f"bare: {per_iter} candidates forward + {cfg.population} forward+backward per iteration, "
        f"{1000 * t_bare / ITERATIONS:.1f} ms / iteration ({per_iter * ITERATIONS / t_bare:,.0f} candidates / s)"
    )
    print(
        f"children scored from their parents' caches: {1000 * t_reuse / (ITERATIONS // 4):.1f} ms, in full: "
        f"{1000 * t_full / (ITERATIONS // 4):.1f} ms per {len(children)} (ratio {t_reuse / t_full:.3f})"
    )
    print(f"epo/bare time ratio: {t_epo / t_bare:.3f}")


if __name__ == "__main__":
    main()
