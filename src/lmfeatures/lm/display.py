"""How tokens are shown in tables and pages. Apart from lm.tokenizer, whose code hash every
model-training job carries, so that a display change reruns no training."""

from __future__ import annotations


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: {the character that stands for a byte in a token piece: that byte}
    (printable Latin-1 bytes stand for themselves, the others for 256, 257, ... in byte order)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = (b for b in range(256) if b not in printable)
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(shifted)}


BYTE_LEVEL = _byte_level_alphabet()


def token_text(tokenizer, token_ids: int | list[int]) -> str:
    """A token, or a sequence of them, as text. A byte-level piece that is not UTF-8 on its own (part
    of a multi-byte character) decodes to '\ufffd'; such bytes are shown as e.g. '\\xe2' instead."""
    ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
    text = tokenizer.decode(ids)
    pieces = "".join(tokenizer.convert_ids_to_tokens(ids))
    if "\ufffd" not in text or not all(c in BYTE_LEVEL for c in pieces):
        return text
    return bytes(BYTE_LEVEL[c] for c in pieces).decode("utf-8", errors="backslashreplace")
