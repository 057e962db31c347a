import math

import torch

from lmfeatures.lm.tokens import TokenizedSplit, tokenize_texts, unigram_baseline
from lmfeatures.store.data import load_split, save_split


def test_byte_level_tokenizer_round_trips_any_text(small_tokenizer):
    tok = small_tokenizer
    assert len(tok) == 400
    for text in ["def f(x):\n    return x ** 2\n", "naïve 🙂 café\t\r\n", "   leading spaces", ""]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == "<|endoftext|>"


def test_tokenized_split_offsets_and_stream(small_tokenizer):
    texts = ["import os\n", "x = 1", "print('hi')\n"]
    split = tokenize_texts(small_tokenizer, texts)
    assert split.n_docs == 3
    for i, t in enumerate(texts):
        assert small_tokenizer.decode(split.document(i).tolist()) == t
    eos = small_tokenizer.eos_token_id
    stream = split.stream(eos)
    expected = []
    for i in range(3):
        expected += split.document(i).tolist() + [eos]
    assert stream.tolist() == expected


def test_save_load_round_trip(tmp_path, small_tokenizer):
    split = tokenize_texts(small_tokenizer, ["a b c", "d e"])
    save_split(split, tmp_path / "s.safetensors")
    again = load_split(tmp_path / "s.safetensors")
    assert torch.equal(again.tokens, split.tokens) and torch.equal(again.doc_offsets, split.doc_offsets)


def test_unigram_baseline_by_hand():
    train = TokenizedSplit(torch.tensor([0, 0, 1], dtype=torch.int32), torch.tensor([0, 3]))
    heldout = TokenizedSplit(torch.tensor([0, 2], dtype=torch.int32), torch.tensor([0, 2]))
    # add-one counts over a vocabulary of 3: [3, 2, 1] / 6
    p = [3 / 6, 2 / 6, 1 / 6]
    stats = unigram_baseline(train, heldout, vocab_size=3)
    assert math.isclose(stats["unigram_entropy_nats"], -sum(q * math.log(q) for q in p), rel_tol=1e-9)
    assert math.isclose(stats["unigram_heldout_xent_nats"], -(math.log(p[0]) + math.log(p[2])) / 2, rel_tol=1e-9)


def test_a_token_that_is_part_of_a_character_is_shown_as_its_bytes(small_tokenizer):
    """'—' is the bytes e2 80 94: alone, the first decodes to '\ufffd' (the report's '�'); shown as
    '\\xe2'. Whole characters and ASCII are the decoder's own text."""
    from lmfeatures.lm.display import token_text

    tok = small_tokenizer
    first_byte = tok.convert_tokens_to_ids("â")  # the byte-level alphabet's character for 0xe2
    assert tok.decode([first_byte]) == "\ufffd" and token_text(tok, first_byte) == "\\xe2"
    for token_id in tok("naïve café def", add_special_tokens=False)["input_ids"]:
        if "\ufffd" not in tok.decode([token_id]):
            assert token_text(tok, token_id) == tok.decode([token_id])
    assert token_text(tok, tok.eos_token_id) == "<|endoftext|>"
    dash = tok("a—b", add_special_tokens=False)["input_ids"]
    assert token_text(tok, dash) == "a—b" and token_text(tok, [*dash, first_byte]) == "a—b\\xe2"
