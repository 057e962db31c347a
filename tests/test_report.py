import pytest

from lmfeatures.report.render import expand_includes, render


def test_expand_includes_inlines_nested_files(tmp_path):
    """As in Quarto, a path in an included file is relative to the main document, not to that file."""
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.md").write_text("A {{< include tables/b.md >}}")
    (tmp_path / "tables" / "b.md").write_text("B")
    assert expand_includes("x {{< include tables/a.md >}} y", tmp_path) == "x A B y"
    with pytest.raises(FileNotFoundError, match="missing.md"):
        expand_includes("{{< include missing.md >}}", tmp_path)


def test_pandoc_renders_self_contained_html(tmp_path):
    src = tmp_path / "report"
    src.mkdir()
    (src / "style.css").write_text("body { color: black; }")
    (src / "report.qmd").write_text(
        "---\ntitle: T\n---\n\n# Section\n\nMath $x^2$.\n\n{{< include tables/t.md >}}\n\n![cap](figures/f.png)\n"
    )
    table = tmp_path / "t.md"
    table.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(tmp_path / "f.png")
    out = tmp_path / "out" / "index.html"
    used = render(str(src), {"tables/t.md": str(table), "figures/f.png": str(tmp_path / "f.png")}, str(out), "pandoc")
    html = out.read_text()
    assert used == "pandoc"
    assert "<table" in html and "<math" in html and 'id="TOC"' in html
    assert "data:image/png;base64" in html  # figure embedded: one self-contained file
    assert not (src / "index.html").exists()


def test_code_in_a_table_cell_keeps_its_pipes_and_leading_spaces(tmp_path):
    from lmfeatures.report.plotting import md_code

    src = tmp_path / "report"
    src.mkdir()
    (src / "style.css").write_text("")
    (src / "report.qmd").write_text("---\ntitle: T\n---\n\n{{< include t.md >}}\n")
    table = tmp_path / "t.md"
    text = "  x | y`z __init__ *a* \\"
    table.write_text(f"| code | n |\n|---|---|\n| {md_code(text)} | 1 |\n")
    out = tmp_path / "out" / "index.html"
    render(str(src), {"t.md": str(table)}, str(out), "pandoc")
    page = out.read_text()
    cell = page[page.index("<code>") + 6 : page.index("</code>")]
    import html

    assert html.unescape(cell).replace("\u00a0", " ") == text  # shown exactly: no emphasis, no escapes
    assert "<td>1</td>" in page  # the pipe did not split the row
