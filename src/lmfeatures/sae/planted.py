"""A planted ground truth for the SAE checks: synthetic layer activations built from known sparse
directions tied to token classes, read out by a synthetic unembedding that makes each direction
predict the tokens its class predicts. What a trained SAE should find is then known exactly: one
feature per planted direction (decoder cosine near 1), specific and sensitive to its class, whose
removal lowers the probability of its class's predicted tokens. A random-decoder SAE can learn the
firing pattern (its encoder is trained) but not the direction, so the decoder-dependent checks
(downstream) must fail for it; a check that cannot separate the two here is no check.

    planted = plant(selection, predicted, d_mlp, vocab, after_any, PlantedConfig())
    windows = planted_windows(planted, check_windows)        # CheckWindows with their activations
    reader = PlantedReader(planted)                          # the checks' view of the planted layer

For token t of class c_k (k = 1 .. directions) the activation is

    x_t = sum_k [t in c_k] * a_tk * d_k + sum_j [u_tj < p] * a_tj * b_j + noise_t,
    a ~ U(0.5, 1.5),   u ~ U(0, 1),   noise_t ~ N(0, noise^2 / d)

with background directions b_j (not tied to a class) firing with probability p, chosen so that a token
has k directions active on average (the SAE's k: TopK with k far above the true L0 splits directions)

and the readout's logits are log f(v) + gain * sum_k <x_t, d_k> [v in predicted(c_k)], f the tokens'
frequency. No file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmfeatures.sae.dictionary_checks import CheckWindows


@dataclass
class PlantedConfig:
    directions: int = 48  # planted features, one per class (fewer if fewer classes qualify)
    background: int = 32  # directions not tied to a class, firing at random so that a token has k active on average
    min_tokens: int = 200  # a class needs this many tokens in the selection windows to get one
    max_overlap: float = 0.5  # and may share at most this share of the smaller class's tokens with a planted class
    noise: float = 0.1  # norm of the isotropic noise per token (a planted activation has norm 0.5-1.5)
    gain: float = 3.0  # logit added to a class's predicted tokens per unit of its direction's activation
    seed: int = 0


@dataclass
class Planted:
    """classes [K] (class indices), directions [K, d] and background [B, d] (unit norm), the
    background's firing probability, readout [d, V], bias [V]."""

    classes: Tensor
    directions: Tensor
    background: Tensor
    background_rate: float
    readout: Tensor
    bias: Tensor
    config: PlantedConfig


@dataclass
class PlantedWindows(CheckWindows):
    """CheckWindows with their planted activations acts [W, pos, d]."""

    acts: Tensor | None = None


def plant(selection: CheckWindows, predicted: Tensor, d: int, k: int, after_any: Tensor, cfg: PlantedConfig) -> Planted:
    """Choose the planted classes (seeded, among those with >= min_tokens tokens and some predicted
    tokens, predicted [C, P] with -1 padding; no two nested: directions that always fire together
    cannot be told apart by any method), their random unit directions in R^d, the background
    directions and the readout. after_any [V]: token counts as next tokens (the readout's bias is
    their log frequency); k: the average number of directions active on a token."""
    gen = torch.Generator().manual_seed(cfg.seed)
    member = selection.classes[selection.valid].float()  # [T, C]
    counts = member.sum(0)
    both = member.T @ member  # [C, C] tokens in both classes
    nested = both / torch.minimum(counts[:, None], counts[None, :]).clamp(min=1) > cfg.max_overlap
    eligible = ((counts >= cfg.min_tokens) & (predicted >= 0).any(1)).nonzero()[:, 0]
    chosen: list[int] = []
    for c in eligible[torch.randperm(len(eligible), generator=gen)].tolist():
        if len(chosen) < cfg.directions and not nested[c, chosen].any():
            chosen.append(c)
    classes = torch.tensor(sorted(chosen), dtype=torch.long)
    directions = torch.randn(len(classes) + cfg.background, d, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    directions, background = directions[: len(classes)], directions[len(classes) :]
    class_active = float(selection.classes[selection.valid][:, classes].sum(1).float().mean())
    rate = min(1.0, max(0.0, k - class_active) / max(cfg.background, 1))
    vocab = len(after_any)
    targets = torch.zeros(len(classes), vocab)
    tokens = predicted[classes]
    targets.scatter_(1, tokens.clamp(min=0), (tokens >= 0).float())
    readout = cfg.gain * directions.T @ targets  # [d, V]
    bias = (after_any + 1).log() - (after_any + 1).sum().log()
    return Planted(classes, directions, background, rate, readout, bias, cfg)


def planted_windows(planted: Planted, windows: CheckWindows, seed: int) -> PlantedWindows:
    """The windows with their planted activations (magnitudes and noise seeded by `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    member = windows.classes[..., planted.classes].float()  # [W, pos, K]
    magnitude = 0.5 + torch.rand(member.shape, generator=gen)
    d = planted.directions.shape[1]
    noise = torch.randn(*member.shape[:2], d, generator=gen) * planted.config.noise / d**0.5
    on = torch.rand(*member.shape[:2], len(planted.background), generator=gen) < planted.background_rate
    background = on * (0.5 + torch.rand(on.shape, generator=gen))
    acts = (member * magnitude) @ planted.directions + background @ planted.background + noise
    return PlantedWindows(windows.ids, windows.valid, windows.classes, acts)


class PlantedReader:
    """The checks' view of the planted layer: activations stored with the windows, logits from the
    planted readout."""

    def __init__(self, planted: Planted, device: torch.device | str = "cpu"):
        self.planted, self.device = planted, torch.device(device)
        self.d_mlp = planted.directions.shape[1]

    def acts(self, windows: PlantedWindows, rows: Tensor) -> Tensor:
        return windows.acts[rows].to(self.device)

    def logits(self, windows: PlantedWindows, rows: Tensor, reads: Tensor) -> Tensor:
        return reads @ self.readout() + self.planted.bias.to(self.device)

    def readout(self) -> Tensor:
        return self.planted.readout.to(self.device)


def recovery(directions: Tensor, w_dec: Tensor) -> tuple[Tensor, Tensor]:
    """Per planted direction [K, d]: the SAE feature whose decoder row (W_dec [U, d]) is closest by
    cosine, and that cosine."""
    rows = w_dec / w_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    best = (directions.to(rows.device) @ rows.T).max(1)
    return best.indices.cpu(), best.values.cpu()
