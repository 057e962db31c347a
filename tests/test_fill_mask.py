"""The fill-mask proposer: a micro BERT saved locally, its words mapped back to the studied tokens."""

import pytest
import torch
from micro import save_fill_mask_model
from transformers import AutoModelForMaskedLM, AutoTokenizer

from lmfeatures.prune.fill_mask import FillMaskProposer, word_overlap

WORDS = ["for", "in", "return", "else", "import", "zzqxv", "yield", "self"]


@pytest.fixture(scope="module")
def fill_mask(tmp_path_factory):
    """The micro BERT with its output bias planted so that its ranking is, whatever the context:
    return > zzqxv > else > import > self > the rest."""
    out = tmp_path_factory.mktemp("bert")
    save_fill_mask_model(str(out), WORDS)
    model, tokenizer = AutoModelForMaskedLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        bias = model.get_output_embeddings().bias
        for rank, word in enumerate(["return", "zzqxv", "else", "import", "self"]):
            bias[tokenizer.convert_tokens_to_ids(word)] = 100.0 - rank
    return model, tokenizer


def test_words_map_to_one_studied_token_with_the_original_leading_space(fill_mask, small_tokenizer):
    model, tokenizer = fill_mask
    studied = small_tokenizer
    ids = torch.tensor(studied.encode("    for x in items:\n        return x"))
    position = next(i for i, t in enumerate(ids.tolist()) if studied.decode([t]) == " return")
    allowed = torch.ones(len(studied), dtype=torch.bool)
    propose = FillMaskProposer(model, tokenizer, studied, n=2)
    got = propose(ids, len(ids) - 1, position, allowed)
    # "return" is the original token, "zzqxv" and " else" are no single studied token (this tokenizer
    # has 400 tokens): the next two, with the original's leading space
    assert [studied.decode([t]) for t in got.tolist()] == [" import", " self"]
    allowed[studied.encode(" import")[0]] = False
    got = FillMaskProposer(model, tokenizer, studied, n=5)(ids, len(ids) - 1, position, allowed)
    decoded = [studied.decode([t]) for t in got.tolist()]
    assert decoded[0] == " self" and sorted(decoded[1:]) == [" for", " in"]  # all that is left that maps


def test_word_overlap_tells_compatible_from_incompatible_tokenizers(tmp_path, small_tokenizer):
    save_fill_mask_model(str(tmp_path / "ok"), ["for", "in", "return"])
    assert word_overlap(AutoTokenizer.from_pretrained(tmp_path / "ok"), small_tokenizer) == 1.0
    save_fill_mask_model(str(tmp_path / "off"), ["zzqxv", "qqjjx", "return"])
    assert word_overlap(AutoTokenizer.from_pretrained(tmp_path / "off"), small_tokenizer) == pytest.approx(1 / 3)
