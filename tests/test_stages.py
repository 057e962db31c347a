"""The wiring between rules and stage functions, the code hash that reruns rules, and the report registry."""

import re
import shutil
from types import SimpleNamespace

import pytest

from lmfeatures import io
from lmfeatures.report.render import expand_includes, sections_markdown
from lmfeatures.stages import RuleWiringError, rule_arguments


class _Named(dict):
    """Stands in for a Snakemake Namedlist: only the named entries matter here."""


def _job(rule="r", input=None, output=None, params=None, wildcards=None, threads=1):
    return SimpleNamespace(
        rule=rule,
        input=_Named(input or {}),
        output=_Named(output or {}),
        params=_Named(params or {}),
        wildcards=_Named(wildcards or {}),
        threads=threads,
    )


def _stage(*, model_dir: str, out_dir: str, model: str, seed: int, threads: int, device: str = "auto") -> None:
    pass


def test_rule_arguments_map_names_to_keywords():
    job = _job(
        input={"model_dir": "m", "corpus_dir": "only a dependency"},
        output={"out_dir": "o"},
        params={"seed": 0, "code": "abc"},
        wildcards={"model": "neox-m", "layer": "3"},
        threads=2,
    )
    assert rule_arguments(_stage, job) == {"model_dir": "m", "out_dir": "o", "model": "neox-m", "seed": 0, "threads": 2}


@pytest.mark.parametrize(
    "job, message",
    [
        (_job(input={"model_dir": "m"}, output={"out_dir": "o"}, params={"seed": 0}), r"missing \['model'\]"),
        (
            _job(input={"model_dir": "m"}, output={"out_dir": "o", "extra": "x"}, params={"seed": 0, "model": "a"}),
            r"unused \['extra'\]",
        ),
        (
            _job(input={"model_dir": "m"}, output={"out_dir": "o"}, params={"seed": 0, "sed": 1, "model": "a"}),
            r"unused \['sed'\]",
        ),
        (
            _job(output={"out_dir": "o"}, params={"seed": 0, "model": "a"}, wildcards={"model": "b"}),
            "'model' is named in both params and wildcards",
        ),
    ],
)
def test_rule_wiring_errors_name_the_rule(job, message):
    with pytest.raises(RuleWiringError, match=message):
        rule_arguments(_stage, job)


def test_code_version_follows_imports(tmp_path, monkeypatch):
    """A stage's hash changes when a module it imports (directly or not) changes, and only then."""
    package = tmp_path / "lmfeatures"
    shutil.copytree(io.PACKAGE_ROOT, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(io, "PACKAGE_ROOT", package)
    before = {s: io.code_version(f"lmfeatures.stages.{s}") for s in ("data", "scans", "epo", "report")}
    with open(package / "epo" / "frontier.py", "a") as f:  # imported by stages.epo only
        f.write("\n# changed\n")
    after = {s: io.code_version(f"lmfeatures.stages.{s}") for s in before}
    assert after["epo"] != before["epo"]
    assert {s: after[s] for s in ("data", "scans", "report")} == {s: before[s] for s in ("data", "scans", "report")}
    with open(package / "lm" / "hooks.py", "a") as f:  # imported through models / neurons / epo: every model stage
        f.write("\n# changed\n")
    again = {s: io.code_version(f"lmfeatures.stages.{s}") for s in before}
    assert again["scans"] != after["scans"] and again["epo"] != after["epo"] and again["data"] == after["data"]
    with open(package / "stages" / "__init__.py", "a") as f:  # every rule script runs it
        f.write("\n# changed\n")
    assert all(io.code_version(f"lmfeatures.stages.{s}") != again[s] for s in before)
    with pytest.raises(ValueError, match="not a module"):
        io.code_version("lmfeatures.nope")


def test_sections_come_from_the_registry(tmp_path):
    (tmp_path / "sections").mkdir()
    (tmp_path / "sections" / "a.md").write_text("Text of A.\n\n{{< include a/table.md >}}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "table.md").write_text("| x |\n|---|\n| 1 |\n")
    registry = [
        {"name": "a", "title": "Section A", "on": True, "off": ""},
        {"name": "b", "title": "Section B", "on": False, "off": "B is switched off: set b.models."},
    ]
    md = re.sub(r"\n{3,}", "\n\n", expand_includes(sections_markdown(registry), tmp_path))  # blank lines are blank
    assert md == "# Section A\n\nText of A.\n\n| x |\n|---|\n| 1 |\n\n# Section B\n\nB is switched off: set b.models.\n"
