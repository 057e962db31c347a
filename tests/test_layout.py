"""The package's layout rules: compute stages never import the presentation code, stages never import
each other, and only lmfeatures/store/ opens results files."""

import importlib.util
import re
from pathlib import Path

import pytest

from lmfeatures import io

COMPUTE_STAGES = ("data", "models", "scans", "epo", "prune", "alignment", "sae")
PRESENTATION_STAGES = ("report", "pages")
STAGES = COMPUTE_STAGES + PRESENTATION_STAGES
REPO = Path(__file__).resolve().parents[1]

# calls that read or write files; outside store/ only the modules below may make them
FILE_ACCESS = re.compile(
    r"\bopen\(|\.(read|write)_(text|bytes)\(|\b(read|write)_json\(|torch\.(load|save)\(|np\.(load|save|memmap)\("
    r"|read_parquet\(|\.to_(parquet|csv)\(|read_csv\(|savefig\(|json\.(load|dump)\(|\.save_pretrained\("
    r"|\.from_pretrained\(|safetensors\.torch|\.unlink\(|shutil\.(copy|copy2|copytree|rmtree|move)\("
)
# files that touch no results file, each with what it does open
NOT_RESULTS = {
    "io.py": "the primitives store/ calls: atomic writes, JSON, provenance, the package's own source",
    "config.py": "the user's YAML and the configs of the models it names",
    "resources.py": "model configs, to size jobs",
    "lm/corpus.py": "the corpus's source files",
    "lm/models.py": "hub models and user-supplied fill-mask models",
    "report/render.py": "the report's templates, copied into a build folder",
}


@pytest.mark.parametrize("stage", COMPUTE_STAGES)
def test_no_compute_stage_imports_the_presentation_code(stage):
    imported = io.imports_of(f"lmfeatures.stages.{stage}")
    assert not {m for m in imported if m.startswith("lmfeatures.report")}


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another(stage):
    imported = io.imports_of(f"lmfeatures.stages.{stage}")
    assert not {f"lmfeatures.stages.{s}" for s in STAGES if s != stage} & imported


def test_only_store_opens_results_files():
    offending = []
    for path in sorted(io.PACKAGE_ROOT.rglob("*.py")):
        name = path.relative_to(io.PACKAGE_ROOT).as_posix()
        if name.startswith("store/") or name in NOT_RESULTS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if FILE_ACCESS.search(code):
                offending.append(f"{name}:{number}: {line.strip()}")
    assert not offending, "file access outside lmfeatures/store/:\n" + "\n".join(offending)


def test_every_stage_module_is_listed():
    """A new stage module must be placed on one side of the compute / presentation line above."""
    found = {p.stem for p in (io.PACKAGE_ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert found == set(STAGES)


@pytest.mark.parametrize(
    "script", sorted(p.relative_to(REPO).as_posix() for d in ("benchmarks", "scripts") for p in (REPO / d).glob("*.py"))
)
def test_benchmarks_and_scripts_import(script):
    """They run outside pytest, so a name moved in the package would otherwise break them unseen."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
