import os
import time

import pytest
import torch
from workflow_runs import report_line, snakemake

# Micro models are tiny: one thread avoids oversubscribing the 2 cores (and is deterministic).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `system` install and start things outside the repository (Debian packages and
    daemons, a fresh virtual environment): they run where CI is set or LMFEATURES_SYSTEM_TESTS=1."""
    if os.environ.get("CI") or os.environ.get("LMFEATURES_SYSTEM_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="installs system packages or a fresh .venv: set LMFEATURES_SYSTEM_TESTS=1 (CI does)")
    for item in items:
        if "system" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_corpus():
    """A 40-document slice of the embedded corpus, shared by the data / tokenizer / training tests."""
    from lmfeatures.lm.corpus import CorpusConfig, build_corpus

    dd, info = build_corpus(CorpusConfig(max_documents=40, max_chars_per_document=3000, heldout_fraction=0.25))
    return dd, info


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus):
    from lmfeatures.lm.tokenizer import TokenizerConfig, train_tokenizer

    return train_tokenizer(small_corpus[0]["train"], TokenizerConfig(vocab_size=400))


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory, request):
    """The workflow run on config/test.yaml in a temporary folder (the end-to-end and cluster tests);
    reports its wall time, which the SLURM test's is compared with."""
    from micro import save_local_model

    workdir = tmp_path_factory.mktemp("e2e")
    save_local_model("qwen3", str(workdir / "local-models" / "qwen3-micro"))  # test.yaml's qwen3-local
    start = time.monotonic()
    snakemake(workdir)
    report_line(request, f"\nthe DAG on config/test.yaml locally: {time.monotonic() - start:.0f} s")
    return workdir
