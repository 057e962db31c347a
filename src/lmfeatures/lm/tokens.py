"""Tokenized corpus splits: one flat token array per split plus document offsets.

A split (stored by lmfeatures.store.data) is
    tokens      int32 [n_tokens]       all documents concatenated, no separators
    doc_offsets int64 [n_docs + 1]     document i is tokens[doc_offsets[i]:doc_offsets[i+1]]
so training can draw windows across documents (joined by EOS) and scans can address a window
by (document, start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenizedSplit:
    tokens: torch.Tensor  # int32 [n_tokens]
    doc_offsets: torch.Tensor  # int64 [n_docs + 1]

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    def document(self, i: int) -> torch.Tensor:
        return self.tokens[self.doc_offsets[i] : self.doc_offsets[i + 1]]

    def stream(self, eos_id: int) -> torch.Tensor:
        """All documents joined by EOS: int64 [n_tokens + n_docs]."""
        lengths = self.doc_offsets.diff()
        out = torch.full((len(self.tokens) + self.n_docs,), eos_id, dtype=torch.int64)
        # position of each token in the joined stream = its index + number of EOS before it
        doc_of_token = torch.repeat_interleave(torch.arange(self.n_docs), lengths)
        out[torch.arange(len(self.tokens)) + doc_of_token] = self.tokens.long()
        return out


def tokenize_texts(tokenizer, texts: list[str], batch_size: int = 256) -> TokenizedSplit:
    ids: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        ids.extend(tokenizer(texts[i : i + batch_size], add_special_tokens=False)["input_ids"])
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for doc in ids for t in doc), dtype=np.int32, count=int(offsets[-1]))
    return TokenizedSplit(tokens=torch.from_numpy(flat), doc_offsets=torch.from_numpy(offsets))


def unigram_baseline(train: TokenizedSplit, heldout: TokenizedSplit, vocab_size: int) -> dict:
    """The loss of the best context-free model: held-out cross-entropy (nats/token) under the
    add-one-smoothed unigram distribution of the train split, and that distribution's entropy."""
    counts = torch.bincount(train.tokens.long(), minlength=vocab_size).double() + 1.0
    p = counts / counts.sum()
    entropy = float(-(p * p.log()).sum())
    xent = float(-p.log()[heldout.tokens.long()].mean())
    return {"unigram_entropy_nats": entropy, "unigram_heldout_xent_nats": xent, "vocab_size": vocab_size}
