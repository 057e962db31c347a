"""Token-class proxies for the SAE checks: which positions of a text belong to a class.

Towards Monosemanticity checks a feature against a proxy for the concept it seems to track (e.g. "is
Arabic script"); the seed document (004) checks its full-stop, `for`, `else` and `import` features
by eye. We make the proxies explicit, per token position, so every feature is checked against every
proxy and can match the one that fits it. Three kinds of class:

    hand classes (config `sae.proxies`), each one of
        a literal, e.g. "for", "import", "."   tokens whose text, stripped of whitespace, is exactly it
        "@indent"      whitespace-only tokens at the start of a line (indentation)
        "@digits"      tokens whose stripped text is all digits
        "@string"      inside a string literal          } read with Python's own tokenizer:
        "@comment"     inside a comment                 } a document it cannot read (not Python)
        "@docstring"   inside a docstring (a string      } contributes no positions to them,
                       standing alone as a statement)   } which the report's class counts show
        "@import"      on an import line (import / from ... import)
        "@decorator"   on a decorator line
        "@bracket"     inside ( ), [ ] or { } (bracket depth > 0)
        "@line_start"  the first token of a line with text (after any indentation)
    token classes: every token id with at least `min_tokens` occurrences in the selection windows is a
        class of its own (the most frequent `max_classes`), named by its text (`token_class_name`)

A token belongs to a character-span class (the Python ones) where its last character is: ' "' opens a
string, ' #' does not start a comment. No file I/O.
"""

from __future__ import annotations

import io
import tokenize

import torch

PYTHON_CLASSES = ("@string", "@comment", "@docstring", "@import", "@decorator", "@bracket", "@line_start")
TOKEN_TEXT_CLASSES = ("@indent", "@digits")
_SKIPPED = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}


class ProxyError(ValueError):
    """A proxy name that is neither a literal nor a known class."""


def check_proxies(names: list[str]) -> None:
    for name in names:
        if not name.strip():
            raise ProxyError(f"proxy {name!r} is empty; give a token text such as 'for' or a class such as '@indent'")
        if name.startswith("@") and name not in (*PYTHON_CLASSES, *TOKEN_TEXT_CLASSES):
            known = ", ".join((*PYTHON_CLASSES, *TOKEN_TEXT_CLASSES))
            raise ProxyError(f"proxy {name!r} is not a known class ({known}); a literal token text has no '@'")


def token_class_name(text: str) -> str:
    """The name of a token class: 'token ' and the token's text as Python writes it."""
    return f"token {text!r}"


def _python_masks(text: str, names: list[str]) -> dict[str, torch.Tensor]:
    """bool [len(text)] per Python class in `names`: which characters lie in it; all False when
    Python cannot tokenize the text."""
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    at = lambda pos: line_starts[pos[0] - 1] + pos[1]  # noqa: E731  (row, col) -> character offset
    edges = {name: torch.zeros(len(text) + 1, dtype=torch.int32) for name in names}

    def mark(name: str, a: int, b: int) -> None:
        if name in edges and b > a:
            edges[name][a] += 1
            edges[name][b] -= 1

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return {name: torch.zeros(len(text), dtype=torch.bool) for name in names}
    statement: list[tokenize.TokenInfo] = []  # the significant tokens of the current logical line
    openers: list[int] = []
    for tok in tokens:
        a, b = at(tok.start), at(tok.end)
        if tok.type == tokenize.STRING:
            mark("@string", a, b)
        elif tok.type == tokenize.COMMENT:
            mark("@comment", a, b)
        elif tok.type == tokenize.OP and tok.string in "([{":
            openers.append(b)
        elif tok.type == tokenize.OP and tok.string in ")]}" and openers:
            mark("@bracket", openers.pop(), a)
        if tok.type in _SKIPPED:
            continue
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if statement:
                first, start, end = statement[0], at(statement[0].start), at(statement[-1].end)
                if first.string in ("import", "from"):
                    mark("@import", start, end)
                elif first.string == "@":
                    mark("@decorator", start, end)
                elif len(statement) == 1 and first.type == tokenize.STRING:
                    mark("@docstring", start, end)
            statement = []
            continue
        statement.append(tok)
    return {name: e[:-1].cumsum(0) > 0 for name, e in edges.items()}


def _line_start_chars(text: str) -> torch.Tensor:
    """bool [len(text)]: the first non-blank character of each line."""
    out = torch.zeros(len(text), dtype=torch.bool)
    at = 0
    for line in text.splitlines(keepends=True):
        body = line.lstrip(" \t")
        if body.strip():
            out[at + len(line) - len(body)] = True
        at += len(line)
    return out


def _is_indent(token: str) -> bool:
    """Newlines (or none) then spaces or tabs, and nothing else."""
    rest = token.lstrip("\n")
    return bool(rest) and not rest.strip(" \t")


def proxy_labels(text: str, token_texts: list[str], offsets: list[tuple[int, int]], names: list[str]) -> torch.Tensor:
    """Hand-class membership of each token of one document: bool [tokens, classes], columns in `names`
    order. token_texts are the decoded tokens, offsets their character spans in text (a fast
    tokenizer's offset mapping)."""
    check_proxies(names)
    out = torch.zeros(len(token_texts), len(names), dtype=torch.bool)
    if not token_texts:
        return out
    span = torch.tensor(offsets, dtype=torch.long).reshape(-1, 2)
    nonempty = span[:, 1] > span[:, 0]
    last = (span[:, 1] - 1).clamp(min=0)
    masks = _python_masks(text, [n for n in names if n in PYTHON_CLASSES and n != "@line_start"])
    if "@line_start" in names:
        starts = torch.cat([torch.zeros(1, dtype=torch.long), _line_start_chars(text).long().cumsum(0)])
        line_start = starts[span[:, 1]] > starts[span[:, 0]]  # the token covers a line's first character
    stripped = [t.strip() for t in token_texts]
    for c, name in enumerate(names):
        if name in masks:
            out[:, c] = nonempty & masks[name][last] if len(text) else False
        elif name == "@line_start":
            out[:, c] = line_start
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
    """Tokenize documents with their offsets and label every token with the hand classes: (token ids
    per document, bool [tokens, classes] per document). Needs a fast tokenizer (for the offsets)."""
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


def frequent_tokens(ids: torch.Tensor, min_tokens: int, max_classes: int) -> torch.Tensor:
    """The token ids that become classes of their own: at least `min_tokens` occurrences in ids (any
    shape), the `max_classes` most frequent, ids ascending."""
    values, counts = ids.flatten().unique(return_counts=True)
    keep = counts >= min_tokens
    values, counts = values[keep], counts[keep]
    return values[counts.argsort(descending=True, stable=True)[:max_classes]].sort().values


def token_classes(ids: torch.Tensor, class_tokens: torch.Tensor) -> torch.Tensor:
    """bool [*ids.shape, len(class_tokens)]: position holds token class_tokens[c]."""
    return ids[..., None] == class_tokens.to(ids.device)
