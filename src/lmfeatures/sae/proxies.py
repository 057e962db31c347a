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

import numpy as np
import torch

PYTHON_CLASSES = ("@string", "@comment", "@docstring", "@import", "@decorator", "@bracket", "@line_start")
TOKEN_TEXT_CLASSES = ("@indent", "@digits")
_LINE_BREAKS = [ord(c) for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"]  # where str.splitlines breaks
_WHITESPACE = [c for c in range(0x3001) if chr(c).isspace()]  # what str.strip removes (none above U+3000)
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
    spans: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in names}

    def mark(name: str, a: int, b: int) -> None:
        if name in spans and b > a:
            spans[name][0].append(a)
            spans[name][1].append(b)

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
    masks = {}
    for name, (starts, ends) in spans.items():  # +1 where a span opens, -1 where it closes, summed
        edges = np.zeros(len(text) + 1, dtype=np.int32)
        np.add.at(edges, starts, 1)
        np.add.at(edges, ends, -1)
        masks[name] = torch.from_numpy(edges[:-1].cumsum() > 0)
    return masks


def _line_start_chars(text: str) -> torch.Tensor:
    """bool [len(text)]: the first non-blank character of each line."""
    chars = _codepoints(text)
    if not len(chars):
        return torch.zeros(0, dtype=torch.bool)
    blank = (chars == ord(" ")) | (chars == ord("\t"))
    newline = np.isin(chars, _LINE_BREAKS)
    line = np.concatenate([[0], np.cumsum(newline)[:-1]])  # the line of each character
    first_text = ~blank & ~newline
    # the first character with text of its line: no earlier character of the line has text
    earlier = np.concatenate([[0], np.cumsum(first_text)[:-1]])
    line_begin = np.concatenate([[True], line[1:] != line[:-1]])
    before_line = np.maximum.accumulate(np.where(line_begin, earlier, 0))
    # and the line has text at all (other whitespace, e.g. a no-break space alone, is not text)
    has_text = np.bincount(line[~np.isin(chars, _WHITESPACE)], minlength=len(chars)) > 0
    return torch.from_numpy(first_text & (earlier == before_line) & has_text[line])


def _codepoints(text: str) -> np.ndarray:
    """uint32 [len(text)]: each character's code point."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _is_indent(token: str) -> bool:
    """Newlines (or none) then spaces or tabs, and nothing else."""
    rest = token.lstrip("\n")
    return bool(rest) and not rest.strip(" \t")


def proxy_labels(text: str, token_texts: list[str], offsets: list[tuple[int, int]], names: list[str]) -> torch.Tensor:
    """Hand-class membership of each token of one document: bool [tokens, classes], columns in `names`
    order. token_texts are the decoded tokens, offsets their character spans in text (a fast
    tokenizer's offset mapping)."""
    distinct: dict[str, int] = {}
    ids = torch.tensor([distinct.setdefault(t, len(distinct)) for t in token_texts], dtype=torch.long)
    return _labels(text, ids, list(distinct), torch.tensor(offsets, dtype=torch.long).reshape(-1, 2), names)


def _labels(text: str, ids: torch.Tensor, id_texts: list[str], span: torch.Tensor, names: list[str]) -> torch.Tensor:
    """proxy_labels from token ids [tokens], the text of each id (id_texts[i]) and character spans
    [tokens, 2]: what depends on a token's text alone is decided once per id, then gathered."""
    check_proxies(names)
    out = torch.zeros(len(ids), len(names), dtype=torch.bool)
    if not len(ids):
        return out
    nonempty = span[:, 1] > span[:, 0]
    last = (span[:, 1] - 1).clamp(min=0)
    masks = _python_masks(text, [n for n in names if n in PYTHON_CLASSES and n != "@line_start"])
    used, local = ids.unique(return_inverse=True)  # the texts of the ids this document uses
    stripped = [id_texts[i].strip() for i in used.tolist()]
    for c, name in enumerate(names):
        if name in masks:
            out[:, c] = nonempty & masks[name][last] if len(text) else False
        elif name == "@line_start":
            starts = torch.cat([torch.zeros(1, dtype=torch.long), _line_start_chars(text).long().cumsum(0)])
            out[:, c] = starts[span[:, 1]] > starts[span[:, 0]]  # the token covers a line's first character
        elif name == "@indent":
            shape = torch.tensor([_is_indent(id_texts[i]) for i in used.tolist()])
            opens_line = torch.tensor([id_texts[i].startswith("\n") for i in used.tolist()])
            chars = torch.from_numpy(_codepoints(text).astype(np.int64))
            after_newline = span[:, 0] == 0
            if len(chars):
                after_newline |= chars[(span[:, 0] - 1).clamp(min=0)] == ord("\n")
            out[:, c] = shape[local] & (opens_line[local] | after_newline)
        elif name == "@digits":
            out[:, c] = torch.tensor([t.isdigit() for t in stripped], dtype=torch.bool)[local]
        else:
            out[:, c] = torch.tensor([t == name for t in stripped], dtype=torch.bool)[local]
    return out


def document_labels(tokenizer, texts: list[str], names: list[str]) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Tokenize documents with their offsets and label every token with the hand classes: (token ids
    per document, bool [tokens, classes] per document). Needs a fast tokenizer (for the offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ProxyError("token-class proxies need a fast tokenizer (offset mappings); this model's is not")
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    id_texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])  # each token id's text, once
    labels = []
    for text, doc_ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        span = torch.tensor(offsets, dtype=torch.long).reshape(-1, 2)
        labels.append(_labels(text, torch.tensor(doc_ids, dtype=torch.long), id_texts, span, names))
    return enc["input_ids"], labels


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
