"""The inputs that maximise a feature, found the four ways of the essay "Language Model Features"
(seed 001), plus its isolated-block variant.

A feature is one dimension `index` of a hook (`resid.L`, the block output, is the essay's
"feature"; or an `mlp.L` neuron), read summed over all positions (the essay's O[:, :, f]) or at
the last position.

    profiles = vocab_profiles(model, hooks)                         # {hook: [V, width]}: every token alone
    tokens = greedy_search(model, "resid.3", features, cfg)          # [F, N] left to right, KV-cached
    found = embedding_ascent(model, hooks, features, cfg)          # EmbeddingAscent: e_g [H, F, n, d], decodings
    own, others = basis_cosines(found.embeddings, features)        # [H, F, n] |cos(e_g, e_f)|, other e_j
    tokens, acts = relaxed_onehot_ascent(model, hooks, features, cfg)  # [H, F, n] argmax of softmax(z / T)

The exhaustive search is one batched forward over the vocabulary with every hook captured at
once. The greedy search runs each feature's prefix once and extends its key/value cache to every
candidate, so a step costs about one forward of |V| single tokens per feature; a chunk of
candidates reads its feature's cached prefix as a view expanded along the batch axis, never a
copy. The gradient methods optimise every requested feature of every hook as one batch: one
forward and backward per step, whatever the number of layers. No file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from lmfeatures.lm.hooks import HookedModel, parse_hook


@dataclass(frozen=True)
class FeatureInputConfig:
    position: str = "sum"  # "sum": summed over positions (the essay's [:, :, f]); "last": the last position
    greedy_tokens: int = 4  # the essay's N for greedy search
    gradient_tokens: int = 5  # the essay's input length for gradient ascent ("limited to five tokens")
    # The essay descends ||C - O_f||_1 with plain gradient steps and gives neither C, the step size nor N.
    # Any C above every reachable value gives the same gradient (that of -sum O_f); we use Adam, whose
    # step size does not depend on the feature's scale, at lr 0.05 (the embeddings' rows have norm ~1)
    # for 150 steps, from the mean embedding plus noise of the embeddings' own scale.
    target: float = 1e4  # C
    gradient_steps: int = 150
    gradient_lr: float = 0.05
    relaxed_temperature: float = 1.0  # softmax(z / T) over the vocabulary, the essay's relaxed one-hot
    relaxed_steps: int = 150
    relaxed_lr: float = 0.1
    batch_size: int = 2048  # sequences per forward in the exhaustive and greedy searches
    seed: int = 0

    def __post_init__(self) -> None:
        if self.position not in ("sum", "last"):
            raise ValueError(f"position={self.position!r} must be 'sum' or 'last'")
        for name in ("greedy_tokens", "gradient_tokens", "gradient_steps", "relaxed_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.relaxed_temperature <= 0:
            raise ValueError(f"relaxed_temperature={self.relaxed_temperature} must be positive")


def _feature(acts: torch.Tensor, index: torch.Tensor, position: str) -> torch.Tensor:
    """acts [F, n, width] -> [F]: unit index[f] of sequence f, summed over positions or at the last one."""
    picked = acts.gather(2, index[:, None, None].expand(-1, acts.shape[1], 1)).squeeze(2)  # [F, n]
    return picked.sum(1) if position == "sum" else picked[:, -1]


@torch.no_grad()
def vocab_profiles(model: HookedModel, hooks: list[str], batch_size: int = 2048) -> dict[str, torch.Tensor]:
    """{hook: [V, width]}: every hook's activation on each token of the vocabulary fed alone (a
    one-token input: summed over positions and last position coincide). One forward per batch
    with every hook captured, stopping after the deepest; float32 on the CPU."""
    vocab = torch.arange(model.vocab_size, device=model.device)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for start in range(0, len(vocab), batch_size):
        acts = model.run(hooks, input_ids=vocab[start : start + batch_size, None])
        for h in hooks:
            out[h].append(acts[h][:, 0].float().cpu())
    return {h: torch.cat(v) for h, v in out.items()}


class _SharedPrefix(DynamicLayer):
    """One attention layer's cache for a chunk of candidates that all continue the same prefix: keys
    and values [rows, heads, t, d_head] are the prefix's row expanded along the batch axis (a view
    with batch stride 0). `update` returns them with the chunk's own key and value appended,
    [rows, heads, t + 1, d_head], the attention's input, and stores nothing: a chunk runs once, so
    its cache is never read again and the prefix stays shared and unchanged."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True  # what DynamicLayer's lazy initialisation would set

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


@torch.no_grad()
def greedy_step(
    model: HookedModel, hook: str, features: torch.Tensor, prefixes: torch.Tensor, batch_size: int = 2048
) -> torch.Tensor:
    """[F, V]: feature features[f] at the last position of prefixes[f] + token v, for every v.
    prefixes [F, t] run once; then each chunk of at most batch_size candidates of one feature reads
    that feature's cached prefix expanded to the chunk (no copy), so a chunk holds its own
    activations and one layer's keys and values at a time, whatever F. With t = 0 every feature
    reads the same V one-token inputs, run once."""
    n_features, vocab = len(features), model.vocab_size
    index = features.to(model.device)
    values = torch.empty(n_features, vocab, device=model.device)
    if not prefixes.shape[1]:
        for start in range(0, vocab, batch_size):
            tokens = torch.arange(start, min(start + batch_size, vocab), device=model.device)
            acts = model.run([hook], input_ids=tokens[:, None])[hook][:, -1]  # [b, width]
            values[:, tokens] = acts[:, index].T.float()
        return values.cpu()
    cache = DynamicCache()
    model.run([hook], input_ids=prefixes, past_key_values=cache)  # fills the cache up to the hook's layer
    prefix = [(layer.keys, layer.values) for layer in cache.layers]  # per layer [F, heads, t, d_head]
    size = min(batch_size, vocab)  # a chunk never spans two features: their prefixes differ
    for f, start in product(range(n_features), range(0, vocab, size)):
        tokens = torch.arange(start, min(start + size, vocab), device=model.device)
        rows = (len(tokens), -1, -1, -1)  # feature f's prefix row, once per candidate
        past = Cache(layers=[_SharedPrefix(k[f : f + 1].expand(rows), v[f : f + 1].expand(rows)) for k, v in prefix])
        acts = model.run([hook], input_ids=tokens[:, None], past_key_values=past)[hook][:, -1]  # [b, width]
        values[f, tokens] = acts[:, index[f]].float()
    return values.cpu()


@torch.no_grad()
def greedy_search(model: HookedModel, hook: str, features: torch.Tensor, cfg: FeatureInputConfig) -> torch.Tensor:
    """[F, cfg.greedy_tokens] token ids: left to right, each step appends the token maximising the
    last position's feature given the tokens so far (the essay's greedy search), from an empty prefix."""
    tokens = torch.empty(len(features), 0, dtype=torch.long, device=model.device)
    for _ in range(cfg.greedy_tokens):
        best = greedy_step(model, hook, features, tokens, cfg.batch_size).argmax(1)
        tokens = torch.cat([tokens, best.to(model.device)[:, None]], dim=1)
    return tokens.cpu()


def pinv_decode(embeddings: torch.Tensor, w_e: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [...] token ids as the essay decodes: a_g = W^+ e_g with W = W_E^T [d, V] (e = W a),
    the token = argmax of a_g. W^+ = W_E (W_E^T W_E)^-1 when W_E [V, d] has full column rank."""
    a = embeddings.double() @ torch.linalg.pinv(w_e.double().T).T  # [..., V]
    return a.argmax(-1)


def nearest_token(embeddings: torch.Tensor, w_e: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [...] the token whose embedding row has the largest cosine with each vector."""
    unit = torch.nn.functional.normalize(w_e.float(), dim=-1)
    return (torch.nn.functional.normalize(embeddings.float(), dim=-1) @ unit.T).argmax(-1)


@dataclass
class EmbeddingAscent:
    embeddings: torch.Tensor  # [H, F, n, d] the optimised input embeddings e_g, per hook and feature
    activation: torch.Tensor  # [H, F] the feature at the end (summed or last, as configured)
    pinv_tokens: torch.Tensor  # [H, F, n] the essay's pseudo-inverse decoding
    nearest_tokens: torch.Tensor  # [H, F, n] the nearest token embedding by cosine


def basis_cosines(embeddings: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """embeddings [..., F, n, d], features [F] -> ([..., F, n] |cos(e_g, basis vector e_f)| =
    |e_g[f]| / ||e_g||, [..., F, n] the mean of |cos(e_g, e_j)| over the other basis vectors j != f):
    whether the ascent for feature f pulls its input towards e_f rather than towards any basis vector,
    from the same start. Defined for features of the embedding's own basis (resid.L, width d)."""
    d = embeddings.shape[-1]
    if int(features.max()) >= d:
        raise ValueError(
            f"feature {int(features.max())} has no basis vector in the {d}-dimensional embedding space: "
            "basis cosines are defined for resid.L features, not mlp.L neurons"
        )
    magnitude = embeddings.abs() / embeddings.norm(dim=-1, keepdim=True)  # [..., F, n, d]
    own = magnitude.gather(-1, features[:, None, None].expand(*magnitude.shape[:-1], 1)).squeeze(-1)
    return own, (magnitude.sum(-1) - own) / (d - 1)


def _hook_features(
    model: HookedModel, hooks: list[str], index: torch.Tensor, embeds: torch.Tensor, position: str, isolated: bool
) -> torch.Tensor:
    """embeds [H * F, n, d] (row k * F + f: feature index[f] of hooks[k]) -> [H * F] each row's feature,
    in one forward up to the deepest hook; `isolated`: row k * F + f enters hooks[k]'s block directly."""
    n_features = len(index)
    entry = None
    if isolated:
        layers = torch.tensor([parse_hook(h)[1] for h in hooks], device=embeds.device)
        entry = (layers.repeat_interleave(n_features), embeds)
    acts = model.run(hooks, inputs_embeds=embeds, block_input=entry)
    return torch.cat(
        [_feature(acts[h][k * n_features : (k + 1) * n_features], index, position) for k, h in enumerate(hooks)]
    )


def embedding_ascent(
    model: HookedModel, hooks: list[str], features: torch.Tensor, cfg: FeatureInputConfig, isolated: bool = False
) -> EmbeddingAscent:
    """Gradient steps on the input embeddings e [H * F, n, d], one sequence per (hook, feature), all in
    one batch, against ||C - O_f(e)||_1, O_f summed over positions or at the last one; decoded by the
    pseudo-inverse and by cosine. `isolated`: each sequence enters its hook's block directly,
    skipping the blocks before it (the essay's block "without all preceding layers"; resid hooks)."""
    if isolated and any(parse_hook(h)[0] != "resid" for h in hooks):
        raise ValueError(f"the isolated-block variant feeds a block's input, so it needs resid hooks, not {hooks}")
    w_e = model.embedding_matrix().detach()
    n_rows = len(hooks) * len(features)
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(n_rows, cfg.gradient_tokens, model.d_model, generator=gen).to(model.device)
    start = w_e.float().mean(0) + noise * w_e.float().std(0)
    embeds = start.to(model.dtype).requires_grad_(True)
    optimizer = torch.optim.Adam([embeds], lr=cfg.gradient_lr)
    index = features.to(model.device)
    for _ in range(cfg.gradient_steps):
        value = _hook_features(model, hooks, index, embeds, cfg.position, isolated)
        loss = (cfg.target - value).abs().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        value = _hook_features(model, hooks, index, embeds, cfg.position, isolated)
        e_g = embeds.detach().float()
        shape = (len(hooks), len(features))
        return EmbeddingAscent(
            e_g.view(*shape, *e_g.shape[1:]).cpu(),
            value.float().view(shape).cpu(),
            pinv_decode(e_g, w_e).view(*shape, -1).cpu(),
            nearest_token(e_g, w_e).view(*shape, -1).cpu(),
        )


def relaxed_onehot_ascent(
    model: HookedModel, hooks: list[str], features: torch.Tensor, cfg: FeatureInputConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The essay's softmax-relaxed one-hot, every (hook, feature) in one batch: logits z [H * F, n, V],
    input softmax(z / T) @ W_E (z starts near zero: the uniform mixture), Adam on -O_f. Returns
    (argmax tokens [H, F, n], the feature on them [H, F])."""
    n_rows = len(hooks) * len(features)
    gen = torch.Generator().manual_seed(cfg.seed)
    z = (0.01 * torch.randn(n_rows, cfg.gradient_tokens, model.vocab_size, generator=gen)).to(model.device)
    z.requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=cfg.relaxed_lr)
    index = features.to(model.device)
    for _ in range(cfg.relaxed_steps):
        soft = torch.softmax(z / cfg.relaxed_temperature, dim=-1).to(model.dtype)
        value = _hook_features(model, hooks, index, model.embed_onehot(soft), cfg.position, False)
        optimizer.zero_grad()
        (-value.sum()).backward()
        optimizer.step()
    tokens = z.detach().argmax(-1)
    with torch.no_grad():
        value = _hook_features(model, hooks, index, model.embed(tokens), cfg.position, False)
    shape = (len(hooks), len(features))
    return tokens.view(*shape, -1).cpu(), value.float().view(shape).cpu()
