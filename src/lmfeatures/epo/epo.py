"""Evolutionary prompt optimization (EPO): prompts on the Pareto frontier of activation vs. fluency.

Thompson, Straznickas, Sarfati, Cashman (2024), "Fluent dreaming for language models". A population
of M prompts, slot j optimizing

    L_j(p) = target(p) - lambda_j * xent(p),    lambdas log-spaced over [lambda_min, lambda_max],

where xent is the mean next-token cross-entropy of the prompt (positions 1..n-1) under a fluency
model (by default the model under study). Each iteration, every slot's member makes r children by
swapping one uniformly random position for a token drawn uniformly from that position's top-k of
the slot objective's one-hot gradient; parents and children are scored together and each slot
keeps the argmax of its own objective. Every `restart_every` iterations the population collapses
onto the best prompt under a lambda drawn from the restart range, or, while no prompt has a
positive target yet, is drawn afresh at random.

Differences from the paper's reference code (github.com/Confirm-Solutions/dreamy), each deliberate:
  * the restart lambda is drawn and used;
  * for an MLP neuron, proposals may follow the gradient of its pre-activation, which is monotone
    where GELU is not (``Scorer.proposal``); selection stays on the neuron's value;
  * a population still trapped at target <= 0 at a restart is re-drawn at random;
  * gradients are computed once per prompt while it stays in the population, as (d proposal,
    d xent), and combined with each slot's own lambda at the time of use, so reordering cannot
    attach the wrong lambda;
  * children are scored from their parent's key/value cache, running only the positions from
    the one they change (``Scorer.score_children``);
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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import psutil
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from lmfeatures.lm.hooks import HookedModel


class EPOError(ValueError):
    """Bad EPO input, raised before any compute."""


@dataclass
class EPOConfig:
    n_tokens: int = 12
    population: int = 8  # M (paper: 32; reference code: 8)
    children: int = 16  # r per member (paper: 4; code: 32)
    top_k: int = 128  # k (paper and code: 512 of ~50k tokens; 128 of our 4096, measured in the schema)
    iterations: int = 200  # T (paper: 200; code: 300)
    restart_every: int = 50  # (paper: 30; code: 50)
    restart_lambda: tuple[float, float] = (0.667, 6.0)  # (paper's range; the code always used 2.0)
    lambda_min: float = 0.1  # (code: 0.1; paper: 1/16)
    lambda_max: float = 10.0  # (code: 10; paper: 16)
    with_replacement: bool = True  # a prompt may fill several slots (as the code does)
    proposal: str = "gradient"  # "gradient" (EPO / GCG) or "random" (random-prompt baseline)
    batch_size: int | None = None  # candidates per forward; None = chosen from free memory
    seed: int = 0

    def __post_init__(self) -> None:
        """Everything the config alone determines is checked here, once, before any compute."""
        if self.lambda_min > self.lambda_max or self.lambda_min < 0:
            raise EPOError(f"epo lambda range [{self.lambda_min}, {self.lambda_max}] is empty or negative")
        if self.lambda_min == 0 and self.lambda_max > 0:
            raise EPOError("epo.lambda_min is 0 but lambda_max is not: log-spacing needs lambda_min > 0")
        lo, hi = self.restart_lambda
        if not 0 <= lo <= hi:
            raise EPOError(f"epo.restart_lambda [{lo}, {hi}] is empty or negative")
        if self.n_tokens < 2:
            raise EPOError("epo.n_tokens must be at least 2 (the fluency term needs a next token)")
        if self.proposal not in ("gradient", "random"):
            raise EPOError(f"epo proposal {self.proposal!r} is not one of: gradient, random")

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
    """One unit (an `mlp` neuron or a `resid` dimension) at the last position or the max over positions."""

    hook: str  # "mlp.3" or "resid.2"
    index: int
    position: str = "last"  # "last" or "max"

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        values = acts[..., self.index]
        return values[:, -1] if self.position == "last" else values.max(dim=1).values


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


CALL_POSITIONS = 200  # a forward call's fixed cost over one child position's: ~5 ms / ~24 µs (neox-m, 2 CPU cores)


@dataclass
class MemberStats:
    """What EPO reuses of one population member while a slot holds it: its gradients (for the
    proposals) and, when children are scored from it (Scorer.reuses_prefix), its keys and values
    and next-token log-probs. A pure function of the prompt, so a memo of it changes no result."""

    grad_proposal: torch.Tensor  # [n, V] d proposal / d onehot
    grad_xent: torch.Tensor  # [n, V] d xent / d onehot
    logp: torch.Tensor | None = None  # [n - 1, V] log p(token at i + 1 = v | tokens 0..i)
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: keys, values [heads, n, d_head]


class Scorer:
    """target(p) and xent(p) of token-id prompts, batched; gradients w.r.t. one-hot inputs.

    `proposal` is what the gradient that proposes tokens differentiates (default: the target).
    For an MLP neuron it is best the neuron's pre-activation (hook mlp_pre.L): monotone where
    the target, the post-activation, is not (GELU below about -0.75), so a prompt deep in the
    negative tail is still pulled up. Selection and every reported number use the target.

    `member_stats` memoises, per prompt of the current population, what its children reuse; the
    model's weights must not change while a Scorer is in use.
    """

    def __init__(
        self,
        model: HookedModel,
        target: Target,
        fluency: HookedModel | None = None,
        batch_size: int = 64,  # candidates per forward; auto_batch_size() fits it to free memory
        proposal: Target | None = None,
    ):
        self.model, self.target = model, target
        self.proposal = proposal or target
        self.fluency = fluency  # None = the model under study (one forward gives both terms)
        self.batch_size = batch_size
        # Children continue their parent's cached prefix when one forward gives both terms and the target
        # is read at the last position (a max over positions would need the prefix's activations too).
        self.reuses_prefix = fluency is None and isinstance(target, UnitTarget) and target.position == "last"
        self._members: dict[tuple[int, ...], MemberStats] = {}

    def _run(self, hooks: list[str], model_in: dict, fluency_in: dict) -> tuple[dict, torch.Tensor]:
        """Activations at `hooks` and the fluency model's logits [batch, n, V]."""
        if self.fluency is None:  # one forward gives both terms
            out = self.model.run(hooks, return_logits=True, **model_in)
            return out, out["logits"]
        # the target forward stops at its layer; the fluency model runs separately
        return self.model.run(hooks, **model_in), self.fluency.run([], return_logits=True, **fluency_in)["logits"]

    @torch.no_grad()
    def score(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [batch, n] -> (target [batch], xent [batch]), in batches of self.batch_size."""
        targets, xents = [ids.new_empty(0, dtype=torch.float32)], [ids.new_empty(0, dtype=torch.float32)]
        for b in range(0, len(ids), self.batch_size):
            chunk = {"input_ids": ids[b : b + self.batch_size]}
            acts, logits = self._run([self.target.hook], chunk, chunk)
            targets.append(self.target(acts[self.target.hook]).float())
            xents.append(xent(logits, chunk["input_ids"]))
        return torch.cat(targets), torch.cat(xents)

    @torch.no_grad()
    def score_children(
        self, parents: torch.Tensor, children: torch.Tensor, parent_of: torch.Tensor, changed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """score(children) for children that differ from their parent, parents[parent_of[c]]
        [M, n], at most at position changed[c], reusing what they share with it.

        A child changed at position p shares its parent's keys and values at positions 0..p-1
        (member_stats keeps them from the gradient pass), so for any q <= p only positions q..n-1
        run, on the parent's cache cut to q; its xent is the parent's NLL of tokens 1..q-1, the
        parent's log-prob of the child's token q, and the new NLL of tokens q+1..n-1. Children are
        grouped by p into runs that each start at their smallest p, the groups chosen so that
        positions run plus CALL_POSITIONS per forward call is least. Equal to score(children) up to
        float rounding; without reuses_prefix, every child is scored in full.
        """
        if not self.reuses_prefix or not len(children):
            return self.score(children)
        stats = self.member_stats(parents)
        if any(s.kv is None for s in stats):  # a cache this code cannot read: score in full
            return self.score(children)
        n = parents.shape[1]
        kv = [
            (torch.stack([s.kv[layer][0] for s in stats]), torch.stack([s.kv[layer][1] for s in stats]))
            for layer in range(len(stats[0].kv))
        ]  # per layer [M, heads, n, d_head]
        logp = torch.stack([s.logp for s in stats])  # [M, n - 1, V]
        nll = -logp.gather(-1, parents[:, 1:, None]).squeeze(-1)  # [M, n - 1]: tokens 1..n-1
        prefix_nll = torch.cat([nll.new_zeros(len(parents), 1), nll.cumsum(1)], dim=1)  # [M, n]: over tokens 1..j
        target = torch.empty(len(children), device=children.device)
        xents = torch.empty(len(children), device=children.device)
        for q, rows in _position_groups(changed, n):
            for b in range(0, len(rows), self.batch_size):
                r = rows[b : b + self.batch_size]
                if q == 0:  # nothing to reuse
                    target[r], xents[r] = self.score(children[r])
                    continue
                kids, par = children[r], parent_of[r]
                past = DynamicCache()
                for layer, (keys, values) in enumerate(kv):
                    past.update(keys[par, :, :q], values[par, :, :q], layer)
                hook = self.target.hook
                out = self.model.run([hook], input_ids=kids[:, q:], return_logits=True, past_key_values=past)
                lg = out["logits"][:, :-1].float()  # predicts tokens q+1..n-1
                suffix = (torch.logsumexp(lg, dim=-1) - lg.gather(-1, kids[:, q + 1 :, None]).squeeze(-1)).sum(1)
                at_q = -logp[par, q - 1].gather(1, kids[:, q : q + 1]).squeeze(1)
                xents[r] = (prefix_nll[par, q - 1] + at_q + suffix) / (n - 1)
                target[r] = self.target(out[hook]).float()
        return target, xents

    def gradients(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For distinct prompts ids [u, n]: (target [u], xent [u], d proposal / d onehot [u, n, V],
        d xent / d onehot [u, n, V]). One forward, two backward passes over the same graph.

        The one-hot is both the input and, for xent, the label (the paper's formulation), so
        d xent / d onehot[i, v] includes -log p(v | x_<i) / (n - 1) for every i >= 1: high-lambda
        slots propose the tokens the fluency model finds likely there."""
        t, x, g_p, g_x, _, _ = self._gradient_pass(ids, keep_prefix=False)
        return t, x, g_p, g_x

    @torch.enable_grad()  # also when called from a no_grad method (score_children)
    def _gradient_pass(self, ids: torch.Tensor, keep_prefix: bool) -> tuple:
        """gradients(ids), then, with keep_prefix, the next-token log-probs [u, n - 1, V] and the
        per-layer keys and values [u, heads, n, d_head] of the same forward (else None, None)."""
        onehot = F.one_hot(ids, self.model.vocab_size).to(self.model.dtype).requires_grad_(True)
        embeds = self.model.embed_onehot(onehot)  # [u, n, d_model]
        f_embeds = embeds if self.fluency is None else self.fluency.embed_onehot(onehot)
        hooks = list(dict.fromkeys([self.target.hook, self.proposal.hook]))
        cache = DynamicCache() if keep_prefix else None
        model_in = {"inputs_embeds": embeds, "past_key_values": cache}
        acts, logits = self._run(hooks, model_in, {"inputs_embeds": f_embeds})
        t = self.target(acts[self.target.hook]).float()
        x = xent_of_onehot(logits, onehot)
        g_p = torch.autograd.grad(self.proposal(acts[self.proposal.hook]).float().sum(), onehot, retain_graph=True)[0]
        g_x = torch.autograd.grad(x.sum(), onehot)[0]
        logp = kv = None
        if keep_prefix:
            logp = torch.log_softmax(logits[:, :-1].detach().float(), dim=-1)
            kv = cache_tensors(cache)
        return t.detach(), x.detach(), g_p, g_x, logp, kv

    def member_stats(self, ids: torch.Tensor) -> list[MemberStats]:
        """One MemberStats per row of the population ids [M, n]. Each prompt is computed once while
        it stays in the population (one gradient pass over the prompts new to it), so a slot that
        keeps its member costs no gradient pass; prompts that left the population are forgotten."""
        keys = [tuple(row) for row in ids.tolist()]
        new = list(dict.fromkeys(k for k in keys if k not in self._members))
        if new:
            _, _, g_p, g_x, logp, kv = self._gradient_pass(torch.tensor(new, device=ids.device), self.reuses_prefix)
            for i, key in enumerate(new):
                self._members[key] = MemberStats(
                    g_p[i],
                    g_x[i],
                    None if logp is None else logp[i],
                    None if kv is None else [(k[i].detach(), v[i].detach()) for k, v in kv],
                )
        self._members = {k: self._members[k] for k in dict.fromkeys(keys)}
        return [self._members[k] for k in keys]


def cache_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer (keys, values) [batch, heads, pos, d_head] of a filled DynamicCache, or None for a
    cache whose layers are not all plain key/value tensors (e.g. a layer that shares another's)."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in cache.layers]
    else:
        pairs = list(zip(cache.key_cache, cache.value_cache))
    if not pairs or any(not isinstance(k, torch.Tensor) or not isinstance(v, torch.Tensor) for k, v in pairs):
        return None
    return pairs


def _position_groups(changed: torch.Tensor, n: int) -> list[tuple[int, torch.Tensor]]:
    """Children changed at positions changed [c] (in 0..n-1) split into groups of consecutive
    positions, each run from its smallest position q: [(q, child indices)]. The split minimises
    sum over groups of CALL_POSITIONS + (n - q) * size, exactly, by dynamic programming over the
    positions that occur (at most n)."""
    counts = torch.bincount(changed, minlength=n).tolist()
    occurring = [p for p in range(n) if counts[p]]
    cum = [0]
    for p in occurring:
        cum.append(cum[-1] + counts[p])
    # best[i]: least cost of the first i occurring positions; start[i]: where its last group starts
    best, start = [0.0], [0]
    for i in range(1, len(occurring) + 1):
        cost, j = min((best[j] + CALL_POSITIONS + (n - occurring[j]) * (cum[i] - cum[j]), j) for j in range(i))
        best.append(cost)
        start.append(j)
    groups, i = [], len(occurring)
    while i:
        j = start[i]
        lo, hi = occurring[j], occurring[i - 1]
        groups.append((lo, torch.nonzero((changed >= lo) & (changed <= hi)).flatten()))
        i = j
    return groups[::-1]


def xent(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each prompt: logits [batch, n, V], ids [batch, n] -> [batch]."""
    lg = logits[:, :-1].float()  # a view for float32 logits: no copy of [batch, n - 1, V]
    nll = torch.logsumexp(lg, dim=-1) - lg.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [batch, n - 1]
    return nll.mean(1)


def xent_of_onehot(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """xent with the one-hot [batch, n, V] as the label: -(1/(n-1)) sum_i <log_softmax(logits_{i-1}),
    onehot_i>. Equal to xent(logits, ids) at a one-hot; differentiable in the label."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    return -(logp * onehot[:, 1:]).sum(-1).mean(1)


def auto_batch_size(model: HookedModel, fluency: HookedModel | None, n_tokens: int) -> int:
    """Candidates of n_tokens per forward: as many as fit in a quarter of free memory, between 16 and 1024."""
    per_candidate = 4 * n_tokens * (model.vocab_size + 12 * model.d_model * model.n_layers + 4 * model.d_mlp)
    if fluency is not None:
        per_candidate += 4 * n_tokens * (fluency.vocab_size + 12 * fluency.d_model * fluency.n_layers)
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
    else:
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

    def to(self, device: torch.device) -> EPOState:
        """The same state with its population on `device`; the RNG state stays on the host."""
        return replace(self, ids=self.ids.to(device), target=self.target.to(device), xent=self.xent.to(device))


def initial_state(scorer: Scorer, tokenizer, cfg: EPOConfig) -> EPOState:
    """Iteration 0: `population` random prompts that survive retokenization, scored."""
    gen = torch.Generator().manual_seed(cfg.seed)  # host RNG: tiny index draws, the same on CPU and GPU
    allowed = allowed_tokens(tokenizer, scorer.model.vocab_size, cfg.top_k)
    init = _random_valid_prompts(tokenizer, allowed, cfg.population, cfg.n_tokens, gen).to(scorer.model.device)
    t, x = scorer.score(init)
    return EPOState(0, init, t, x, {tuple(r) for r in init.tolist()}, gen.get_state())


def epo(
    scorer: Scorer,
    tokenizer,
    cfg: EPOConfig,
    state: EPOState | None = None,
    on_iteration: Callable[[dict], None] | None = None,
) -> EPOState:
    """Run EPO to cfg.iterations, from `state` when given (resuming), else from initial_state().

    `state` is updated in place after every iteration, so `on_iteration` may checkpoint it. It
    receives, per iteration, the scored candidates: ids [c, n], target [c], xent [c], kept [c]
    (number of slots that kept the candidate), restart (lambda or None), reinitialised (a restart
    found the population still at target <= 0 and drew fresh random prompts, which are the last
    candidates) and seconds.
    """
    device = scorer.model.device
    allowed = allowed_tokens(tokenizer, scorer.model.vocab_size, cfg.top_k)
    banned = torch.ones(scorer.model.vocab_size, dtype=torch.bool)
    banned[allowed] = False
    banned = banned.to(device)
    lambdas = cfg.lambdas().to(device)
    if state is None:
        state = initial_state(scorer, tokenizer, cfg)
    gen = torch.Generator()
    gen.set_state(state.rng_state)
    while state.iteration < cfg.iterations:
        t0 = time.perf_counter()
        if cfg.proposal == "gradient":
            children, parent_of, changed = _gradient_children(scorer, state, cfg, lambdas, banned, gen)
        else:
            count = cfg.population * cfg.children
            children = _random_valid_prompts(tokenizer, allowed, count, cfg.n_tokens, gen).to(device)
        # dedupe against each other and everything scored before; keep only real strings
        fresh, keys = [], set()
        for i, row in enumerate(children.tolist()):
            key = tuple(row)
            if key not in state.seen and key not in keys:
                keys.add(key)
                fresh.append(i)
        fresh = torch.tensor(fresh, dtype=torch.int64, device=device)
        if len(fresh):
            fresh = fresh[retokenizes(tokenizer, children[fresh].cpu()).to(device)]
        cand = children[fresh]
        state.seen.update(tuple(r) for r in cand.tolist())
        if cfg.proposal == "gradient":  # children share a prefix with their parent: reuse it
            ct, cx = scorer.score_children(state.ids, cand, parent_of[fresh], changed[fresh])
        else:
            ct, cx = scorer.score(cand)
        pool_ids = torch.cat([state.ids, cand])
        pool_t, pool_x = torch.cat([state.target, ct]), torch.cat([state.xent, cx])
        objective = pool_t[None, :] - lambdas[:, None] * pool_x[None, :]  # [M, pool]
        pick = _select(objective, cfg.with_replacement, gen)
        restart, reinitialised = None, False
        if cfg.restart_every and (state.iteration + 1) % cfg.restart_every == 0 and cfg.proposal == "gradient":
            lo, hi = cfg.restart_lambda
            restart = float(lo + (hi - lo) * torch.rand((), generator=gen))
            if float(pool_t.max()) > 0:
                pick = torch.full_like(pick, int(torch.argmax(pool_t - restart * pool_x)))
            else:  # still trapped: collapsing onto the best prompt cannot leave the trap, so start afresh
                reinitialised = True
                redrawn = _random_valid_prompts(tokenizer, allowed, cfg.population, cfg.n_tokens, gen).to(device)
                ft, fx = scorer.score(redrawn)
                state.seen.update(tuple(r) for r in redrawn.tolist())
                pick = torch.arange(len(pool_ids), len(pool_ids) + len(redrawn), device=device)
                cand, ct, cx = torch.cat([cand, redrawn]), torch.cat([ct, ft]), torch.cat([cx, fx])
                pool_ids = torch.cat([pool_ids, redrawn])
                pool_t, pool_x = torch.cat([pool_t, ft]), torch.cat([pool_x, fx])
        kept = torch.bincount(pick, minlength=len(pool_ids))
        state.ids, state.target, state.xent = pool_ids[pick], pool_t[pick], pool_x[pick]
        state.iteration += 1
        state.rng_state = gen.get_state()
        if on_iteration is not None:
            n_par = len(pool_ids) - len(cand)
            on_iteration(
                {
                    "iteration": state.iteration,
                    "ids": cand.cpu(),
                    "target": ct.cpu(),
                    "xent": cx.cpu(),
                    "kept": kept[n_par:].cpu(),
                    "parents_kept": kept[:n_par].cpu(),
                    "restart": restart,
                    "reinitialised": reinitialised,
                    "seconds": time.perf_counter() - t0,
                }
            )
    state.rng_state = gen.get_state()
    return state


def allowed_tokens(tokenizer, vocab_rows: int, top_k: int) -> torch.Tensor:
    """int64 [n_allowed] the ids that may be proposed; at least top_k of them, or EPOError."""
    allowed = torch.nonzero(~banned_token_mask(tokenizer, vocab_rows)).flatten()
    if top_k > len(allowed):
        raise EPOError(f"epo.top_k={top_k} is larger than the {len(allowed)} tokens that can be proposed")
    return allowed


def _random_valid_prompts(
    tokenizer, allowed: torch.Tensor, count: int, n: int, gen: torch.Generator, tries: int = 50
) -> torch.Tensor:
    """count random prompts of n allowed tokens that survive retokenization."""
    out = torch.empty(0, n, dtype=torch.int64)
    for _ in range(tries):
        draw = allowed[torch.randint(len(allowed), (2 * count, n), generator=gen)]
        out = torch.cat([out, draw[retokenizes(tokenizer, draw)]])[:count]
        if len(out) == count:
            return out
    raise EPOError(f"could not draw {count} random prompts of {n} tokens that survive retokenization")


def _gradient_children(
    scorer: Scorer, state: EPOState, cfg: EPOConfig, lambdas: torch.Tensor, banned: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Children [M * r, n], one random position per child, its token uniform from that slot's
    top-k; with each child's slot [M * r] (its parent is state.ids[slot]) and that position [M * r]."""
    stats = scorer.member_stats(state.ids)  # one gradient pass over the members new to the population
    g_p = torch.stack([s.grad_proposal for s in stats])  # [M, n, V]
    g_x = torch.stack([s.grad_xent for s in stats])
    grad = g_p - lambdas[:, None, None] * g_x  # [M, n, V] slot objective
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
    return children.view(m * r, n), slot.reshape(-1), pos.reshape(-1)


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


METHODS = ("epo", "gcg", "random")


def method_config(method: str, params: dict, seed: int) -> EPOConfig:
    """EPO from config; GCG = M 1, lambda 0, same candidates per iteration; random = random proposals."""
    fields = {k: v for k, v in params.items() if k in EPOConfig.__dataclass_fields__}
    if "restart_lambda" in fields:  # a list in YAML
        fields["restart_lambda"] = tuple(fields["restart_lambda"])
    cfg = EPOConfig(**fields, seed=seed)
    if method == "gcg":
        return EPOConfig(
            **{
                **cfg.__dict__,
                "population": 1,
                "children": cfg.population * cfg.children,
                "lambda_min": 0.0,
                "lambda_max": 0.0,
                "restart_every": 0,
            }
        )
    if method == "random":
        return EPOConfig(**{**cfg.__dict__, "proposal": "random"})
    if method != "epo":
        raise EPOError(f"EPO method {method!r} is not one of {METHODS}")
    return cfg
