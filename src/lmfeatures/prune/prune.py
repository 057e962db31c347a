"""Pruning a top example to its Minimal Activating Example (MAE), token importance, and local search.

After Foote's 2022 report ("Investigating neuron behaviour via dataset example pruning and local
search") and its successor Neuron2Graph (N2G); their defaults are recorded in `PruneConfig`.

    mae = prune(model, unit, ids, anchor, line_start, cfg)                 # shortest context that keeps it
    imp = importance_matrices(model, unit, mae.ids[None], neutral)[0]      # [m, m] drop when a token is masked
    variants = local_search(model, unit, mae, imp[mae.anchor], allowed, cfg)

A unit is a `UnitTarget`-like (hook, index): one MLP neuron (or residual dimension), read at the
anchor token. In a causal LM the anchor's activation cannot depend on later tokens, so "trimming
from the end" is exact: the MAE ends at the anchor (plus `cfg.window` tokens kept for display);
only the left edge is searched. Every function scores all of its candidates in one batched forward,
right-padded: a causal model's real positions never attend to the padding after them, so no
attention mask or position shift is needed, on any architecture. No file I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmfeatures.lm.hooks import HookedModel


@dataclass(frozen=True)
class PruneConfig:
    # pruning keeps the shortest left context whose anchor activation is >= keep_share x the full
    # window's (the report allowed a 60% drop, so 0.4; N2G keeps 50%)
    keep_share: float = 0.4
    window: int = 0  # tokens after the anchor shown with the MAE (N2G re-appends up to 5)
    max_context: int = 32  # longest MAE searched (tokens up to the anchor); longer ones fall back to the whole window
    # local search varies tokens whose importance (1 - act(masked) / act) is at least this (N2G: 0.75-0.8)
    important: float = 0.5
    positive_share: float = 0.6  # a variant keeping >= this share of the MAE's activation is positive (report: 0.6)
    negative_share: float = 0.3  # ... below this share, negative (report: 0.3); in between: neither
    n_substitutes: int = 5  # substitutes kept per varied token (N2G and the report: 5)
    candidate_k: int = 32  # candidates from each proposer (next-token and gradient) before re-ranking

    def __post_init__(self) -> None:
        if not 0 < self.keep_share <= 1:
            raise ValueError(f"keep_share={self.keep_share} must be in (0, 1]")
        if not 0 <= self.negative_share <= self.positive_share:
            raise ValueError(
                f"negative_share={self.negative_share} must be between 0 and positive_share={self.positive_share}"
            )
        for name in ("window", "max_context", "n_substitutes", "candidate_k"):
            if getattr(self, name) < (0 if name == "window" else 1):
                raise ValueError(f"{name}={getattr(self, name)} is out of range")


def prune_config(params: dict) -> PruneConfig:
    """PruneConfig from the config's `prune:` section (its other keys are the stage's, not the method's)."""
    return PruneConfig(**{k: v for k, v in params.items() if k in PruneConfig.__dataclass_fields__})


@dataclass(frozen=True)
class Unit:
    """One unit read at one token: `index` of activation hook `hook` (e.g. "mlp.3", 17)."""

    hook: str
    index: int


@dataclass
class MAE:
    """A Minimal Activating Example: ids[start:end] of the original window, anchor inside it."""

    ids: torch.Tensor  # [m] token ids of the MAE (anchor, then up to cfg.window later tokens)
    anchor: int  # index of the anchor token inside ids
    start: int  # where the MAE starts in the original window
    activation: float  # the unit at the anchor, MAE alone
    original: float  # the unit at the anchor, full window
    within_line: bool  # the MAE lies inside the anchor's line (else the line alone lost the activation)


@torch.no_grad()
def activations_at(model: HookedModel, unit: Unit, seqs: list[torch.Tensor], at: list[int]) -> torch.Tensor:
    """The unit at position at[i] of sequence seqs[i] (1-D id tensors of any lengths) -> [len(seqs)];
    one forward, right-padded, stopping after the unit's layer."""
    width = max(len(s) for s in seqs)
    batch = torch.zeros(len(seqs), width, dtype=torch.int64)
    for row, seq in enumerate(seqs):
        batch[row, : len(seq)] = seq
    acts = model.run([unit.hook], input_ids=batch.to(model.device))[unit.hook]  # [b, width, d]
    rows = torch.arange(len(seqs), device=acts.device)
    return acts[rows, torch.tensor(at, device=acts.device), unit.index].float().cpu()


def prune(model: HookedModel, unit: Unit, ids: torch.Tensor, anchor: int, line_start: int, cfg: PruneConfig) -> MAE:
    """The MAE of window ids [n] around its anchor position: the latest start s (shortest context)
    whose ids[s : anchor + 1] keeps >= cfg.keep_share of the full window's activation, searched
    inside the anchor's line (line_start..anchor) first, then before it when the line alone does not
    keep it; at most cfg.max_context tokens, else the whole window. All candidate starts are scored
    in one batch."""
    if not 0 <= anchor < len(ids):
        raise ValueError(f"anchor {anchor} is outside the window of {len(ids)} tokens")
    starts = [0] + list(range(max(1, anchor + 1 - cfg.max_context), anchor + 1))  # start 0: the full window
    acts = activations_at(model, unit, [ids[s : anchor + 1] for s in starts], [anchor - s for s in starts])
    original = float(acts[0])
    if original <= 0:
        raise ValueError(f"the unit's activation at the anchor is {original:.3g} <= 0: nothing to prune")
    keeps = {s: bool(a >= cfg.keep_share * original) for s, a in zip(starts, acts.tolist())}
    in_line = [s for s in starts if s >= line_start and keeps[s]]
    start = max(in_line) if in_line else max(s for s in starts if keeps[s])
    end = min(len(ids), anchor + 1 + cfg.window)
    activation = float(acts[starts.index(start)])
    return MAE(ids[start:end].clone(), anchor - start, start, activation, original, bool(in_line))


@torch.no_grad()
def activations_everywhere(model: HookedModel, unit: Unit, seqs: torch.Tensor) -> torch.Tensor:
    """seqs [b, m] token ids -> [b, m]: the unit at every position; one forward, stopping after the
    unit's layer."""
    return model.run([unit.hook], input_ids=seqs.to(model.device))[unit.hook][..., unit.index].float().cpu()


def importance_matrices(
    model: HookedModel, unit: Unit, prompts: torch.Tensor, neutral: int, max_sequences: int = 512
) -> torch.Tensor:
    """prompts [p, m] -> [p, m, m]: for each prompt, the importance of token j for the unit at token i,
    1 - act_i(token j replaced by `neutral`) / act_i (N2G's saliency, a row per token so each firing
    token gets its own pattern); 0 where act_i is 0, and (masking them changes nothing) for j > i,
    which a causal model cannot see, and for tokens that already are `neutral`. Each prompt, then
    each of its tokens masked, in forwards of at most `max_sequences` sequences (m + 1 per prompt)."""
    p, m = prompts.shape
    variants = prompts[:, None, :].repeat(1, m + 1, 1)  # [p, m + 1, m]: row 0 as is, row j + 1 with token j masked
    variants[:, 1:].diagonal(dim1=1, dim2=2).fill_(neutral)
    per_forward = max(1, max_sequences // (m + 1))  # whole prompts per forward
    acts = torch.cat(
        [
            activations_everywhere(model, unit, chunk.reshape(-1, m)).reshape(-1, m + 1, m)
            for chunk in variants.split(per_forward)
        ]
    )
    base = acts[:, 0]  # [p, m]
    masked = acts[:, 1:].transpose(1, 2)  # [p, i, j]: the unit at token i with token j masked
    safe = torch.where(base == 0, torch.ones_like(base), base)
    return torch.where(base[:, :, None] == 0, 0.0, 1 - masked / safe[:, :, None])


def substitutes(
    model: HookedModel,
    unit: Unit,
    ids: torch.Tensor,
    anchor: int,
    position: int,
    allowed: torch.Tensor,
    cfg: PruneConfig,
) -> torch.Tensor:
    """Up to cfg.n_substitutes token ids for ids[position], from the studied model used as a masked LM.

    Candidates: the model's top cfg.candidate_k next tokens after ids[:position] and the top
    cfg.candidate_k tokens of the gradient of the unit (at the anchor) w.r.t. the one-hot input at
    `position`, as EPO proposes, limited to `allowed` [vocab] bool and never the original token.
    They are re-ranked by the whole variant's log-likelihood under the model: log p(w | left) +
    log p(right | left, w), which is log p(w | left, right) up to a constant, the masked-LM
    posterior; the best n are kept, best first."""
    prefix = ids[: anchor + 1].to(model.device)
    onehot = F.one_hot(prefix, model.vocab_size).to(model.dtype)[None].requires_grad_(True)
    out = model.run([unit.hook], inputs_embeds=model.embed_onehot(onehot), return_logits=True)
    (grad,) = torch.autograd.grad(out[unit.hook][0, anchor, unit.index], onehot)
    ok = allowed.to(model.device).clone()
    ok[ids[position]] = False
    proposals = [grad[0, position].masked_fill(~ok, -torch.inf).topk(cfg.candidate_k).indices]
    if position > 0:
        next_token = out["logits"][0, position - 1].detach().masked_fill(~ok, -torch.inf)
        proposals.append(next_token.topk(cfg.candidate_k).indices)
    candidates = torch.unique(torch.cat(proposals))
    candidates = candidates[ok[candidates]]
    variants = ids.to(model.device).repeat(len(candidates), 1)
    variants[:, position] = candidates
    return candidates[sequence_log_likelihood(model, variants).argsort(descending=True)[: cfg.n_substitutes]].cpu()


@torch.no_grad()
def sequence_log_likelihood(model: HookedModel, ids: torch.Tensor) -> torch.Tensor:
    """ids [b, m] -> [b] sum over tokens 1..m-1 of log p(token | earlier tokens)."""
    logits = model.run([], input_ids=ids.to(model.device), return_logits=True)["logits"][:, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[:, 1:, None].to(logits.device)).squeeze(-1).sum(1)


# (ids [m], anchor, position, allowed [vocab] bool) -> substitute token ids for ids[position], best first
Proposer = Callable[[torch.Tensor, int, int, torch.Tensor], torch.Tensor]


@dataclass
class Variant:
    """One token of the MAE swapped: its activation and label."""

    ids: torch.Tensor  # [m]
    position: int  # which token changed
    token: int  # the substitute
    activation: float
    label: str  # "positive" | "negative" | "neither"


def local_search(
    model: HookedModel,
    unit: Unit,
    mae: MAE,
    importance: torch.Tensor,
    allowed: torch.Tensor,
    cfg: PruneConfig,
    propose: Proposer | None = None,
) -> list[Variant]:
    """Vary each token of the MAE with importance >= cfg.important (content tokens only: `allowed`
    [vocab] bool, which also bounds the substitutes) with the substitutes `propose` gives (default:
    `substitutes`, the studied model as a masked LM; or a fill_mask.FillMaskProposer) and label each
    variant by the share of the MAE's activation it keeps: positive >= cfg.positive_share, negative <
    cfg.negative_share. All variants are scored in one batch."""
    propose = propose or functools.partial(substitutes, model, unit, cfg=cfg)
    positions = [p for p in range(mae.anchor + 1) if importance[p] >= cfg.important and bool(allowed[int(mae.ids[p])])]
    swaps = [(p, int(t)) for p in positions for t in propose(mae.ids, mae.anchor, p, allowed)]
    if not swaps:
        return []
    seqs = []
    for p, t in swaps:
        seq = mae.ids.clone()
        seq[p] = t
        seqs.append(seq)
    acts = activations_at(model, unit, [s[: mae.anchor + 1] for s in seqs], [mae.anchor] * len(seqs))
    variants = []
    for (p, t), seq, act in zip(swaps, seqs, acts.tolist()):
        share = act / mae.activation if mae.activation > 0 else 0.0
        label = "positive" if share >= cfg.positive_share else "negative" if share < cfg.negative_share else "neither"
        variants.append(Variant(seq, p, t, act, label))
    return variants
