import pytest

from lmfeatures.lm.corpus import CorpusConfig, CorpusError, build_corpus, heldout_by_hash, stdlib_files


def test_stdlib_corpus_excludes_tests_and_site_packages():
    root, files = stdlib_files()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert len(rel) > 100
    assert not any("/test/" in r or r.startswith("test/") or "/tests/" in r for r in rel)
    assert not any(r.split("/")[-1].startswith("test_") for r in rel)
    assert not any(r.startswith("site-packages/") for r in rel)
    assert "os.py" in rel and rel == sorted(rel)


def test_split_is_by_hash_of_path_and_deterministic(small_corpus):
    dd, info = small_corpus
    for split, expect in (("train", False), ("heldout", True)):
        for doc_id in dd[split]["doc_id"]:
            assert heldout_by_hash(doc_id, 0.25) is expect
    again, info2 = build_corpus(CorpusConfig(max_documents=40, max_chars_per_document=3000, heldout_fraction=0.25))
    assert list(again["heldout"]["doc_id"]) == list(dd["heldout"]["doc_id"])
    assert info2["content_sha256"] == info["content_sha256"]
    assert info["documents"]["train"] + info["documents"]["heldout"] == 40
    assert info["python_version"].count(".") == 2


def test_hash_split_fraction_is_close():
    ids = [f"doc{i}.py" for i in range(4000)]
    share = sum(heldout_by_hash(i, 0.1) for i in ids) / len(ids)
    assert 0.085 < share < 0.115


def test_local_text_files_through_datasets_loader(tmp_path):
    lines = [f"line number {i} of the corpus" for i in range(50)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    dd, info = build_corpus(CorpusConfig(source="text", data_files=[str(path)], heldout_fraction=0.3))
    assert sorted(list(dd["train"]["text"]) + list(dd["heldout"]["text"])) == sorted(lines)
    assert info["documents"]["heldout"] > 0


def test_empty_corpus_and_missing_column_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n")  # only blank lines: no document survives
    with pytest.raises(CorpusError, match="no documents"):
        build_corpus(CorpusConfig(source="text", data_files=[str(empty)]))
    path = tmp_path / "c.txt"
    path.write_text("a\nb\n")
    with pytest.raises(CorpusError, match="no column 'body'"):
        build_corpus(CorpusConfig(source="text", data_files=[str(path)], text_column="body"))


def test_empty_or_missing_local_files_are_one_clear_error(tmp_path):
    from lmfeatures.lm.corpus import CorpusError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(CorpusError, match=r"are empty, so there is no document"):
        build_corpus(CorpusConfig(source="json", data_files=[str(empty)]))
    with pytest.raises(CorpusError, match="does not exist"):
        build_corpus(CorpusConfig(source="json", data_files=[str(tmp_path / "nope.jsonl")]))


def test_a_file_in_another_encoding_is_named_with_the_byte_and_the_key(tmp_path):
    """The loader's own error blamed the source ("give local files with corpus.source: text") for
    a byte it could not decode."""
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("def f():\n    return 1\n" * 20)
    bad.write_bytes(b"# caf\xe9\n" + b"x = 1\n" * 40)
    cfg = CorpusConfig(source="text", data_files=[str(tmp_path / "*.txt")], heldout_fraction=0.3)
    with pytest.raises(
        CorpusError, match=rf"^corpus.data_files: {bad} is not utf-8: byte 0xe9 at position 5 .*corpus.encoding"
    ):
        build_corpus(cfg)
    cfg.encoding = "latin-1"
    dd, _ = build_corpus(cfg)
    assert "# café" in "".join([*dd["train"]["text"], *dd["heldout"]["text"]])
