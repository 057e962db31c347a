import pytest
import torch

# Micro models are tiny: one thread avoids oversubscribing the 2 cores (and is deterministic).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_corpus():
    """A 40-document slice of the embedded corpus, shared by the data / tokenizer / training tests."""
    from lmfeatures.corpus import CorpusConfig, build_corpus

    dd, info = build_corpus(CorpusConfig(max_documents=40, max_chars_per_document=3000, heldout_fraction=0.25))
    return dd, info


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus):
    from lmfeatures.tokenizer import TokenizerConfig, train_tokenizer

    return train_tokenizer(small_corpus[0]["train"], TokenizerConfig(vocab_size=400))
