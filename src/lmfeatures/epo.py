"""Evolutionary prompt optimization (EPO): prompts on the Pareto frontier of activation vs. fluency.

Thompson, Straznickas, Sarfati, Cashman (2024), "Fluent dreaming for language models". A population
of M prompts, slot j optimizing

    L_j(p) = target(p) - lambda_j * xent(p),    lambdas log-spaced over [lambda_min, lambda_max],

where xent is the mean next-token cross-entropy of the prompt (positions 1..n-1) under a fluency
model (by default the model under study). Each iteration, every slot's member makes r children by
swapping one uniformly random position for a token drawn uniformly from that position's top-k of
the slot objective's one-hot gradient; parents and children are scored together and each slot
keeps the argmax of its own objective. Every `restart_every` iterations the population collapses
onto the best prompt under a lambda drawn from the restart range.

Differences from the reference code (ANCHORS.md section 3), each deliberate:
  * the restart lambda is drawn and used;
  * gradients are computed once per *distinct* prompt as (d target, d xent) and combined with each
    slot's own lambda at the time of use, so reordering cannot attach the wrong lambda;
  * top-k runs on the device; special tokens and ids outside the tokenizer are never proposed;
  * children are deduplicated against each other and against everything already scored;
  * every candidate passes a retokenization check (decode, re-encode, same ids) before it is
    scored, so each reported prompt is a real string producing the reported activation.
GCG is the same loop with M = 1 and lambda = 0; random search replaces gradient proposals with
fresh random prompts. Both share this code path (``EPOConfig.proposal``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from .hooks import HookedModel


@dataclass
class EPOConfig:
    n_tokens: int = 12
    population: int = 8  # M (paper: 32; reference code: 8)
    children: int = 16  # r per member (paper: 4; code: 32)
    top_k: int = 256  # k (paper and code: 512)
    iterations: int = 200  # T (paper: 200; code: 300)
    restart_every: int = 50  # (paper: 30; code: 50)
    restart_lambda: tuple[float, float] = (0.667, 6.0)  # (paper's range; the code always used 2.0)
    lambda_min: float = 0.1  # (code: 0.1; paper: 1/16)
    lambda_max: float = 10.0  # (code: 10; paper: 16)
    with_replacement: bool = True  # a prompt may fill several slots (as the code does)
    proposal: str = "gradient"  # "gradient" (EPO / GCG) or "random" (random-prompt baseline)
    batch_size: int | None = None  # candidates per forward; None = chosen from free memory
    seed: int = 0

    def lambdas(self) -> torch.Tensor:
        """[population] fluency weights, log-spaced (all equal when min == max, e.g. 0 for GCG)."""
        if self.lambda_min == self.lambda_max:
            return torch.full((self.population,), float(self.lambda_min))
        return torch.logspace(math.log10(self.lambda_min), math.log10(self.lambda_max), self.population)


class Target(Protocol):
    """What EPO maximizes: reads one hook point's activations and returns one number per prompt."""

    hook: str

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:  # [batch, pos, dim] -> [batch]
        ...


@dataclass
class UnitTarget:
    """One unit (an `mlp` neuron or a `resid` dimension / direction) at the last position or the max over positions."""

    hook: str  # "mlp.3" or "resid.2"
    index: int | None = None  # unit index; or give `direction`
    direction: torch.Tensor | None = None  # [dim] for a residual-stream direction
    position: str = "last"  # "last" or "max"

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        values = acts[..., self.index] if self.direction is None else acts @ self.direction.to(acts)
        return values[:, -1] if self.position == "last" else values.max(dim=1).values


class EPOError(ValueError):
    """Bad EPO input, raised before any compute."""


def pareto_front(target: torch.Tensor, xent: torch.Tensor) -> torch.Tensor:
    """Indices of the points no other point beats on both target (higher) and xent (lower),
    sorted by xent ascending. target, xent: [n]."""
    order = torch.argsort(target, descending=True, stable=True)
    order = order[torch.argsort(xent[order], stable=True)]  # by xent, ties by target descending
    t = target[order]
    best_before = torch.cat([t.new_full((1,), -math.inf), torch.cummax(t, 0).values[:-1]])
    return order[t > best_before]


def banned_token_mask(tokenizer, vocab_rows: int) -> torch.Tensor:
    """[vocab_rows] bool: ids never proposed (special tokens, ids the tokenizer does not have)."""
    banned = torch.zeros(vocab_rows, dtype=torch.bool)
    banned[len(tokenizer) :] = True
    for t in tokenizer.all_special_ids:
        if t < vocab_rows:
            banned[t] = True
    return banned


def retokenizes(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """ids [batch, n] -> [batch] bool: decoding then re-encoding gives the same ids."""
    texts = tokenizer.batch_decode(ids.tolist())
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([a == b for a, b in zip(again, ids.tolist())], dtype=torch.bool)


class Scorer:
    """target(p) and xent(p) of token-id prompts, batched; gradients w.r.t. one-hot inputs."""

    def __init__(self, model: HookedModel, target: Target, fluency: HookedModel | None = None,
                 batch_size: int | None = None):  # fmt: skip
        self.model, self.target = model, target
        self.fluency = fluency  # None = the model under study (one forward gives both terms)
        self.batch_size = batch_size or auto_batch_size(model, fluency)

    def _forward(self, ids: torch.Tensor | None = None, embeds: tuple | None = None):
        """target [batch] and xent [batch] of ids [batch, n] (from ids, or from (embeds, fluency embeds))."""
        hook = self.target.hook
        model_in = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds[0]}
        if self.fluency is None:  # one forward gives both terms
            out = self.model.run([hook], return_logits=True, **model_in)
            logits = out["logits"]
        else:  # the target forward stops at its layer; the fluency model runs separately
            out = self.model.run([hook], **model_in)
            fluency_in = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds[1]}
            logits = self.fluency.run([], return_logits=True, **fluency_in)["logits"]
        return self.target(out[hook]).float(), xent(logits, ids)

    @torch.no_grad()
    def score(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [batch, n] -> (target [batch], xent [batch]), in batches of self.batch_size."""
        parts = [self._forward(ids[b : b + self.batch_size]) for b in range(0, len(ids), self.batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def gradients(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For distinct prompts ids [u, n]: (target [u], xent [u], d target / d onehot [u, n, V],
        d xent / d onehot [u, n, V]). One forward, two backward passes over the same graph."""
        w_e = self.model.embedding_matrix()
        onehot = F.one_hot(ids, w_e.shape[0]).to(w_e.dtype).requires_grad_(True)
        embeds = onehot @ w_e  # [u, n, d_model]
        f_embeds = None if self.fluency is None else onehot @ self.fluency.embedding_matrix()
        t, x = self._forward(ids, (embeds, f_embeds))
        g_t = torch.autograd.grad(t.sum(), onehot, retain_graph=True)[0]
        g_x = torch.autograd.grad(x.sum(), onehot)[0]
        return t.detach(), x.detach(), g_t, g_x


def xent(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each prompt: logits [batch, n, V], ids [batch, n] -> [batch]."""
    lg = logits[:, :-1].float()  # a view for float32 logits: no copy of [batch, n - 1, V]
    nll = torch.logsumexp(lg, dim=-1) - lg.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [batch, n - 1]
    return nll.mean(1)


def auto_batch_size(model: HookedModel, fluency: HookedModel | None, n_tokens: int = 16) -> int:
    """Candidates per forward: as many as fit in a quarter of free memory, between 16 and 1024."""
    per_candidate = 4 * n_tokens * (model.vocab_size + 12 * model.d_model * model.n_layers + 4 * model.d_mlp)
    if fluency is not None:
        per_candidate += 4 * n_tokens * (fluency.vocab_size + 12 * fluency.d_model * fluency.n_layers)
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    return int(max(16, min(1024, free // 4 // per_candidate)))


@dataclass
class EPOState:
    """Everything needed to resume: population, RNG state and the set of prompts already scored."""

    iteration: int
    ids: torch.Tensor  # [M, n] current member of each slot
    target: torch.Tensor  # [M]
    xent: torch.Tensor  # [M]
    seen: set = field(default_factory=set)
    rng_state: torch.Tensor | None = None


def epo(scorer: Scorer, tokenizer, cfg: EPOConfig, state: EPOState | None = None,
        on_iteration: Callable[[dict], None] | None = None) -> EPOState:  # fmt: skip
    """Run EPO to cfg.iterations (resuming from `state` when given).

    on_iteration receives, per iteration, the scored candidates: ids [c, n], target [c], xent [c],
    kept [c] (number of slots that kept the candidate), restart (lambda or None) and seconds.
    """
    model = scorer.model
    device = model.device
    vocab_rows = model.vocab_size
    validate(cfg, tokenizer, vocab_rows)
    banned = banned_token_mask(tokenizer, vocab_rows).to(device)
    allowed = torch.nonzero(~banned).flatten()
    lambdas = cfg.lambdas().to(device)
    gen = torch.Generator()  # host RNG: proposals are tiny index draws; the same on CPU and GPU
    if state is None:
        gen.manual_seed(cfg.seed)
        init = _random_valid_prompts(tokenizer, allowed.cpu(), cfg.population, cfg.n_tokens, gen).to(device)
        t, x = scorer.score(init)
        state = EPOState(0, init, t, x, {tuple(r) for r in init.tolist()})
    else:
        gen.set_state(state.rng_state)
    while state.iteration < cfg.iterations:
        t0 = time.perf_counter()
        if cfg.proposal == "gradient":
            children = _gradient_children(scorer, state, cfg, lambdas, banned, gen)
        else:
            children = _random_valid_prompts(tokenizer, allowed.cpu(), cfg.population * cfg.children,
                                             cfg.n_tokens, gen).to(device)  # fmt: skip
        # dedupe against each other and everything scored before; keep only real strings
        fresh, keys = [], []
        for row in children.tolist():
            key = tuple(row)
            if key not in state.seen and key not in keys:
                keys.append(key)
                fresh.append(row)
        cand = torch.tensor(fresh, dtype=torch.int64, device=device).view(-1, cfg.n_tokens)
        if len(cand):
            cand = cand[retokenizes(tokenizer, cand.cpu()).to(device)]
        state.seen.update(tuple(r) for r in cand.tolist())
        ct, cx = scorer.score(cand) if len(cand) else (state.target[:0], state.xent[:0])
        pool_ids = torch.cat([state.ids, cand])
        pool_t, pool_x = torch.cat([state.target, ct]), torch.cat([state.xent, cx])
        objective = pool_t[None, :] - lambdas[:, None] * pool_x[None, :]  # [M, pool]
        pick = _select(objective, cfg.with_replacement, gen)
        restart = None
        if cfg.restart_every and (state.iteration + 1) % cfg.restart_every == 0 and cfg.proposal == "gradient":
            lo, hi = cfg.restart_lambda
            restart = float(lo + (hi - lo) * torch.rand((), generator=gen))
            best = int(torch.argmax(pool_t - restart * pool_x))
            pick = torch.full_like(pick, best)
        kept = torch.bincount(pick, minlength=len(pool_ids))
        state.ids, state.target, state.xent = pool_ids[pick], pool_t[pick], pool_x[pick]
        state.iteration += 1
        state.rng_state = gen.get_state()
        if on_iteration is not None:
            n_par = len(pool_ids) - len(cand)
            on_iteration({"iteration": state.iteration, "ids": cand.cpu(), "target": ct.cpu(), "xent": cx.cpu(),
                          "kept": kept[n_par:].cpu(), "parents_kept": kept[:n_par].cpu(), "restart": restart,
                          "seconds": time.perf_counter() - t0})  # fmt: skip
    state.rng_state = gen.get_state()
    return state


def validate(cfg: EPOConfig, tokenizer, vocab_rows: int) -> None:
    n_allowed = int((~banned_token_mask(tokenizer, vocab_rows)).sum())
    if cfg.top_k > n_allowed:
        raise EPOError(f"epo.top_k={cfg.top_k} is larger than the {n_allowed} tokens that can be proposed")
    if cfg.lambda_min > cfg.lambda_max or cfg.lambda_min < 0:
        raise EPOError(f"epo lambda range [{cfg.lambda_min}, {cfg.lambda_max}] is empty or negative")
    if cfg.lambda_min == 0 and cfg.lambda_max > 0:
        raise EPOError("epo.lambda_min is 0 but lambda_max is not: log-spacing needs lambda_min > 0")
    lo, hi = cfg.restart_lambda
    if not 0 <= lo <= hi:
        raise EPOError(f"epo.restart_lambda [{lo}, {hi}] is empty or negative")
    if cfg.n_tokens < 2:
        raise EPOError("epo.n_tokens must be at least 2 (the fluency term needs a next token)")
    if cfg.proposal not in ("gradient", "random"):
        raise EPOError(f"epo proposal {cfg.proposal!r} is not one of: gradient, random")


def _random_valid_prompts(tokenizer, allowed: torch.Tensor, count: int, n: int, gen: torch.Generator,
                          tries: int = 50) -> torch.Tensor:  # fmt: skip
    """count random prompts of n allowed tokens that survive retokenization."""
    out = torch.empty(0, n, dtype=torch.int64)
    for _ in range(tries):
        draw = allowed[torch.randint(len(allowed), (2 * count, n), generator=gen)]
        out = torch.cat([out, draw[retokenizes(tokenizer, draw)]])[:count]
        if len(out) == count:
            return out
    raise EPOError(f"could not draw {count} random prompts of {n} tokens that survive retokenization")


def _gradient_children(scorer: Scorer, state: EPOState, cfg: EPOConfig, lambdas: torch.Tensor,
                       banned: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    """[M * r, n] children: one random position per child, token uniform from that slot's top-k."""
    distinct, member_of_slot = torch.unique(state.ids, dim=0, return_inverse=True)
    _, _, g_t, g_x = scorer.gradients(distinct)  # [u, n, V] each: one gradient pass per distinct prompt
    grad = g_t[member_of_slot] - lambdas[:, None, None] * g_x[member_of_slot]  # [M, n, V] slot objective
    grad = grad.masked_fill(banned, -math.inf)
    top = grad.topk(cfg.top_k, dim=-1).indices  # [M, n, k] on the device
    m, n = state.ids.shape
    r = cfg.children
    pos = torch.randint(n, (m, r), generator=gen).to(top.device)
    choice = torch.randint(cfg.top_k, (m, r), generator=gen).to(top.device)
    slot = torch.arange(m, device=top.device)[:, None].expand(m, r)
    new_tok = top[slot, pos, choice]  # [M, r]
    children = state.ids[:, None, :].repeat(1, r, 1)  # [M, r, n]
    children.scatter_(2, pos[..., None], new_tok[..., None])
    return children.view(m * r, n)


def _select(objective: torch.Tensor, with_replacement: bool, gen: torch.Generator) -> torch.Tensor:
    """objective [M, pool] -> [M] pool index kept by each slot."""
    if with_replacement:
        return objective.argmax(dim=1)
    # without replacement: slots in random order each take their best prompt not yet taken
    taken = torch.zeros(objective.shape[1], dtype=torch.bool, device=objective.device)
    pick = torch.empty(objective.shape[0], dtype=torch.int64, device=objective.device)
    for j in torch.randperm(objective.shape[0], generator=gen).tolist():
        best = int(objective[j].masked_fill(taken, -math.inf).argmax())
        pick[j] = best
        taken[best] = True
    return pick


# ---------------------------------------------------------------------------------------------
# Stage entry points: one run per (model, neuron, method, seed); one comparison per (model, neuron)

METHODS = ("epo", "gcg", "random")
CHECKPOINT_EVERY = 25


def method_config(method: str, params: dict, seed: int) -> EPOConfig:
    """EPO from config; GCG = M 1, lambda 0, same candidates per iteration; random = random proposals."""
    fields = {k: v for k, v in params.items() if k in EPOConfig.__dataclass_fields__}
    fields["restart_lambda"] = tuple(fields.get("restart_lambda", (0.667, 6.0)))
    cfg = EPOConfig(**fields, seed=seed)
    if method == "gcg":
        return EPOConfig(**{**cfg.__dict__, "population": 1, "children": cfg.population * cfg.children,
                            "lambda_min": 0.0, "lambda_max": 0.0, "restart_every": 0})  # fmt: skip
    if method == "random":
        return EPOConfig(**{**cfg.__dict__, "proposal": "random"})
    if method != "epo":
        raise EPOError(f"EPO method {method!r} is not one of {METHODS}")
    return cfg


def build_scorer(model_dir: str, neuron_text: str, params: dict, device: str, fluency_dir: str | None = None):
    """(Scorer, tokenizer) for neuron 'L{layer}N{index}' of a saved model, checked before any compute."""
    from .models import load_model, resolve_device
    from .neurons import Neuron

    dev = resolve_device(device)
    model, tok = load_model(model_dir, dev)
    hooked = HookedModel(model)
    neuron = Neuron.from_name(neuron_text)
    hooked.check_hook(neuron.hook)
    if not 0 <= neuron.index < hooked.d_mlp:
        raise EPOError(f"neuron {neuron_text}: index {neuron.index} is outside layer {neuron.layer} "
                       f"(0-{hooked.d_mlp - 1})")  # fmt: skip
    fluency = None
    if fluency_dir:
        f_model, f_tok = load_model(fluency_dir, dev)
        if f_tok.get_vocab() != tok.get_vocab():
            raise EPOError(f"the fluency model at {fluency_dir} has a different tokenizer than {model_dir}; "
                           "EPO needs the same token ids in both")  # fmt: skip
        fluency = HookedModel(f_model)
    target = UnitTarget(neuron.hook, neuron.index, position=params.get("position", "last"))
    return Scorer(hooked, target, fluency, params.get("batch_size")), tok


def epo_run_stage(model_dir: str, out_dir: str, neuron: str, method: str, params: dict, seed: int,
                  device: str, threads: int, config: dict, fluency_dir: str | None = None) -> None:  # fmt: skip
    """One EPO / GCG / random run: history.parquet, frontier.json, provenance.json; resumable."""
    from pathlib import Path

    import pandas as pd

    from .io import atomic_path, write_json, write_provenance

    torch.set_num_threads(threads)
    cfg = method_config(method, params, seed)
    scorer, tok = build_scorer(model_dir, neuron, params, device, fluency_dir)
    validate(cfg, tok, scorer.model.vocab_size)
    out = Path(out_dir)
    ckpt = out.parent / f".{out.name}.checkpoint.pt"
    history: list[dict] = []
    state = None
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        if saved["config"] == cfg.__dict__:  # resume only the same run
            state, history = saved["state"], saved["history"]
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.iterations, initial=state.iteration if state else 0, desc=f"{method} {neuron} s{seed}",
               unit="it", mininterval=2.0)  # fmt: skip

    def record(r: dict) -> None:
        for ids, t, x, k in zip(r["ids"].tolist(), r["target"].tolist(), r["xent"].tolist(), r["kept"].tolist()):
            history.append({"iteration": r["iteration"], "ids": ids, "target": t, "xent": x, "kept": k,
                            "restart_lambda": r["restart"], "seconds": r["seconds"]})  # fmt: skip
        bar.update(1 if r["iteration"] else 0)  # iteration 0 is the initial population
        bar.set_postfix(best=f"{max(h['target'] for h in history):.3f}")

    if state is None:  # the initial population is part of the history (iteration 0)
        state = epo(scorer, tok, EPOConfig(**{**cfg.__dict__, "iterations": 0}))
        record({"iteration": 0, "ids": state.ids.cpu(), "target": state.target.cpu(), "xent": state.xent.cpu(),
                "kept": torch.ones(len(state.ids), dtype=torch.int64), "restart": None, "seconds": 0.0})  # fmt: skip
    while state.iteration < cfg.iterations:
        stop = min(cfg.iterations, (state.iteration // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY)
        state = epo(scorer, tok, EPOConfig(**{**cfg.__dict__, "iterations": stop}), state, record)
        torch.save({"config": cfg.__dict__, "state": state, "history": history}, ckpt)
    bar.close()
    df = pd.DataFrame(history)
    df["text"] = tok.batch_decode(df["ids"].tolist())
    front = pareto_front(torch.tensor(df["target"].values), torch.tensor(df["xent"].values)).tolist()
    rows = df.iloc[front]
    # the retokenization check, end to end: the decoded strings, re-encoded, give the reported activation
    ids = torch.tensor(tok(list(rows["text"]), add_special_tokens=False)["input_ids"], device=scorer.model.device)
    rescored, rexent = scorer.score(ids)
    frontier = [{"text": r.text, "ids": r.ids, "target": r.target, "xent": r.xent, "rescored_target": float(t),
                 "rescored_xent": float(x)} for r, t, x in zip(rows.itertuples(), rescored.tolist(), rexent.tolist())]  # fmt: skip
    with atomic_path(out, directory=True) as tmp:
        df.to_parquet(tmp / "history.parquet")
        write_json(tmp / "frontier.json", {"model_dir": model_dir, "neuron": neuron, "method": method, "seed": seed,
                                           "config": cfg.__dict__, "n_scored": len(df), "frontier": frontier})  # fmt: skip
        write_provenance(tmp, config, seed, neuron=neuron, method=method,
                         seconds=float(df.groupby("iteration")["seconds"].first().sum()))  # fmt: skip
    ckpt.unlink(missing_ok=True)


def epo_neurons_stage(scan_dir: str, model_dir: str, out_json: str, explicit: list[str], per_layer: int,
                      layers: list[int] | None) -> None:  # fmt: skip
    """Which neurons get EPO runs: the explicit list, else the top `per_layer` by max activation per layer."""
    from .io import write_json
    from .neurons import Neuron
    from .scan import ScanError, load_scan

    scan = load_scan(scan_dir, model_dir=model_dir)
    n_layers = scan.meta["n_layers"]
    if explicit:
        chosen = [Neuron.parse(t) for t in explicit]
        for n in chosen:
            if not 0 <= n.layer < n_layers:
                raise ScanError(f"epo.neurons {n.layer}.{n.index}: layer {n.layer} is out of range for "
                                f"{scan.meta['model']} (0-{n_layers - 1})")  # fmt: skip
            scan.check_unit(n.hook, n.index)
    else:
        chosen = []
        for layer in layers if layers is not None else range(n_layers):
            if not 0 <= layer < n_layers:
                raise ScanError(f"epo.auto_layers: layer {layer} is out of range for {scan.meta['model']} "
                                f"(0-{n_layers - 1})")  # fmt: skip
            top = scan[f"mlp.{layer}.max"].topk(per_layer).indices
            chosen += [Neuron(layer, int(i)) for i in top]
    write_json(out_json, [n.name for n in chosen])
