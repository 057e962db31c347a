"""Token-class proxies for specificity and sensitivity: which positions of a text belong to a class.

Towards Monosemanticity checks a feature against a proxy for the concept it seems to track (e.g. "is
Arabic script"); the seed document (004) checks its full-stop, `for`, `else` and `import` features
by eye. We make the proxies explicit, per token position, so every feature is checked against every
proxy. A proxy is named in the config by one of:

    a literal, e.g. "for", "import", "."   tokens whose text, stripped of whitespace, is exactly it
    "@indent"    whitespace-only tokens at the start of a line (indentation)
    "@digits"    tokens whose stripped text is all digits
    "@string"    tokens inside a string literal (Python's own tokenizer finds them)
    "@comment"   tokens inside a comment (likewise)

@string and @comment read each document with Python's `tokenize`; a document it cannot read (not
Python) contributes no positions to them, which the report's class counts show.
"""

from __future__ import annotations

import io
import tokenize

import torch

CONTEXT_CLASSES = {"@string": tokenize.STRING, "@comment": tokenize.COMMENT}
TOKEN_CLASSES = ("@indent", "@digits")
DEFAULT_PROXIES = [
    "for",
    "import",
    "else",
    "return",
    "def",
    "if",
    "in",
    "self",
    ".",
    "@indent",
    "@string",
    "@comment",
    "@digits",
]


class ProxyError(ValueError):
    """A proxy name that is neither a literal nor a known class."""


def check_proxies(names: list[str]) -> None:
    for name in names:
        if not name.strip():
            raise ProxyError(f"proxy {name!r} is empty; give a token text such as 'for' or a class such as '@indent'")
        if name.startswith("@") and name not in (*CONTEXT_CLASSES, *TOKEN_CLASSES):
            known = ", ".join((*CONTEXT_CLASSES, *TOKEN_CLASSES))
            raise ProxyError(f"proxy {name!r} is not a known class ({known}); a literal token text has no '@'")


def _python_spans(text: str, kind: int) -> list[tuple[int, int]]:
    """Character spans [start, end) of the tokens of `kind` (tokenize.STRING, COMMENT) in text;
    [] when Python cannot tokenize it."""
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    spans = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == kind:
                (r0, c0), (r1, c1) = tok.start, tok.end
                spans.append((line_starts[r0 - 1] + c0, line_starts[r1 - 1] + c1))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    return spans


def _is_indent(token: str) -> bool:
    """Newlines (or none) then spaces or tabs, and nothing else."""
    rest = token.lstrip("\n")
    return bool(rest) and not rest.strip(" \t")


def proxy_labels(text: str, token_texts: list[str], offsets: list[tuple[int, int]], names: list[str]) -> torch.Tensor:
    """Class membership of each token of one document: bool [tokens, classes], columns in `names` order.
    token_texts are the decoded tokens, offsets their character spans in text (a fast tokenizer's
    offset mapping)."""
    check_proxies(names)
    n = len(token_texts)
    out = torch.zeros(n, len(names), dtype=torch.bool)
    stripped = [t.strip() for t in token_texts]
    for c, name in enumerate(names):
        if name in CONTEXT_CLASSES:
            inside = torch.zeros(len(text) + 1, dtype=torch.int32)
            for a, b in _python_spans(text, CONTEXT_CLASSES[name]):
                inside[a] += 1
                inside[b] -= 1
            covered = inside.cumsum(0) > 0
            # a token belongs where its last character is: ' "' opens a string, ' #' does not start a comment
            out[:, c] = torch.tensor([b > a and bool(covered[b - 1]) for a, b in offsets])
        elif name == "@indent":
            out[:, c] = torch.tensor(
                [
                    _is_indent(t) and (t.startswith("\n") or a == 0 or text[a - 1] == "\n")
                    for t, (a, _) in zip(token_texts, offsets)
                ]
            )
        elif name == "@digits":
            out[:, c] = torch.tensor([s.isdigit() for s in stripped])
        else:
            out[:, c] = torch.tensor([s == name for s in stripped])
    return out


def document_labels(tokenizer, texts: list[str], names: list[str]) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Tokenize documents with their offsets and label every token: (token ids per document,
    bool [tokens, classes] per document). Needs a fast tokenizer (for the offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ProxyError("token-class proxies need a fast tokenizer (offset mappings); this model's is not")
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    decoded: dict[int, str] = {}
    ids, labels = [], []
    for text, doc_ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        for t in set(doc_ids) - decoded.keys():
            decoded[t] = tokenizer.decode([t])
        token_texts = [decoded[t] for t in doc_ids]
        ids.append(doc_ids)
        labels.append(proxy_labels(text, token_texts, [tuple(o) for o in offsets], names))
    return ids, labels
