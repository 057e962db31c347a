"""Substitutes from a Hugging Face fill-mask model (e.g. distilbert-base-uncased), as the 2022 report
and N2G propose them, mapped back to the studied model's tokens.

The default proposer (`prune.substitutes`) uses the studied model itself as a masked LM; this one
asks a separate masked LM for the word at a position given both sides, in its own vocabulary:

    propose = FillMaskProposer(mlm, mlm_tokenizer, studied_tokenizer, n=5, candidate_k=32)
    ids = propose(mae_ids, anchor, position, allowed)   # [<= n] studied-token ids, best first
    variants = prune.local_search(model, unit, mae, importance, allowed, cfg, propose)

A proposed word becomes the studied token that the original token's leading whitespace plus the
word encodes to, and is kept only when that is one token (a word the studied tokenizer splits cannot
replace one token). `word_overlap` measures how many of the fill-mask model's words map at all, so
an incompatible pair of tokenizers is caught before any neuron is searched. No file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _leading_space(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _single_token(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


@dataclass
class FillMaskProposer:
    model: torch.nn.Module  # a transformers *ForMaskedLM, eval mode
    tokenizer: object  # its tokenizer (has a mask token)
    studied: object  # the studied model's tokenizer
    n: int = 5  # substitutes kept (N2G, the report: 5)
    candidate_k: int = 32  # fill-mask words read before mapping (many do not map to one token)

    def __post_init__(self) -> None:
        if self.tokenizer.mask_token is None:
            raise ValueError(f"{type(self.tokenizer).__name__} has no mask token: it is not a fill-mask model's")
        self.words = [self.tokenizer.decode([i]).strip() for i in range(len(self.tokenizer))]

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, anchor: int, position: int, allowed: torch.Tensor) -> torch.Tensor:
        """Up to n studied-token ids for ids[position] of ids [m], in the fill-mask model's order of
        p(word | left, right), never the original token, only `allowed` [vocab] ones (a prune.Proposer;
        the anchor does not matter: the fill-mask model reads the whole MAE)."""
        original = int(ids[position])
        space = _leading_space(self.studied.decode([original]))
        left = self.studied.decode(ids[:position].tolist()) + space
        right = self.studied.decode(ids[position + 1 :].tolist())
        enc = self.tokenizer(left + self.tokenizer.mask_token + right, return_tensors="pt", truncation=True)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        at = (enc["input_ids"][0] == self.tokenizer.mask_token_id).nonzero()
        if not len(at):  # truncated away: the text was longer than the fill-mask model's context
            return torch.empty(0, dtype=torch.int64)
        logits = self.model(**enc).logits[0, int(at[0])]  # [mlm vocab]
        chosen: list[int] = []
        for word_id in logits.topk(min(self.candidate_k, logits.numel())).indices.tolist():
            word = self.words[word_id]
            token = _single_token(self.studied, space + word) if word else None
            if token is not None and token != original and bool(allowed[token]) and token not in chosen:
                chosen.append(token)
            if len(chosen) == self.n:
                break
        return torch.tensor(chosen, dtype=torch.int64)


def word_overlap(tokenizer, studied) -> float:
    """Share of the fill-mask vocabulary's alphabetic words that are one studied token (with a
    leading space or without): near 0 means the two tokenizers cannot exchange words."""
    words = {tokenizer.decode([i]).strip() for i in range(len(tokenizer))}
    words = [w for w in words if w.isalpha()]
    if not words:
        return 0.0
    hits = sum(_single_token(studied, " " + w) is not None or _single_token(studied, w) is not None for w in words)
    return hits / len(words)
