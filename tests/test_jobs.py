"""Job times and memory: every rule has Snakemake's benchmark file; the report's appendix and
scripts/peak_memory.py read them."""

import importlib.util
import re
from pathlib import Path

import pytest
from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

from lmfeatures.stages.report import job_summary
from lmfeatures.store.benchmarks import read_job_benchmarks

REPO = Path(__file__).resolve().parents[1]


def _rules(text: str) -> dict[str, str]:
    """{rule name: its body} of a rule file."""
    parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_rule_but_all_has_a_benchmark_file_beside_its_log():
    rules = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        rules |= _rules(path.read_text())
    assert len(rules) > 20
    for name, body in rules.items():
        log = re.search(r"    log:\n        (.*?),?\n", body)
        bench = re.search(r"    benchmark:\n        (.*?),?\n", body)
        assert log and bench, f"rule {name} has no log or no benchmark"
        assert bench.group(1) == log.group(1).replace("/logs/", "/benchmarks/").replace('.log"', '.tsv"'), name


def _benchmark(path: Path, seconds: float, rss: float | None, cpu: float) -> None:
    record = BenchmarkRecord()
    record.running_time = seconds
    if rss is not None:  # a job shorter than Snakemake's sampling has no memory reading: "NA"
        record.max_rss, record.cpu_time, record.data_collected = rss, cpu, True
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records([record], str(path), False)


@pytest.fixture
def benchmarks(tmp_path):
    root = tmp_path / "results" / "benchmarks"
    _benchmark(root / "scans" / "micro-a.tsv", 12.5, 900.0, 20.0)
    _benchmark(root / "epo" / "micro-b" / "L1N3" / "seed0.tsv", 30.0, 1500.0, 55.0)
    _benchmark(root / "epo" / "micro-b" / "L1N3" / "seed1.tsv", 28.0, 1400.0, 50.0)
    _benchmark(root / "report" / "model_summary.tsv", 0.4, None, 0.0)
    return root


def test_job_table_and_appendix(benchmarks, tmp_path):
    jobs = read_job_benchmarks(benchmarks)
    assert sorted(jobs["job"]) == [
        "epo/micro-b/L1N3/seed0",
        "epo/micro-b/L1N3/seed1",
        "report/model_summary",
        "scans/micro-a",
    ]
    epo = jobs[jobs["stage"] == "epo"]
    assert epo["seconds"].sum() == 58.0 and epo["peak_rss_mb"].max() == 1500.0
    assert jobs.set_index("job")["peak_rss_mb"].isna()["report/model_summary"]
    table, figure = tmp_path / "jobs.md", tmp_path / "jobs.png"
    job_summary(benchmarks=str(benchmarks), table=str(table), figure=str(figure))
    text = table.read_text()
    assert "4 jobs, 71 s of wall time" in text and "1,500 MB, in `epo/micro-b/L1N3/seed0`" in text
    rows = [line for line in text.splitlines() if line.startswith("| epo ")]
    assert len(rows) == 1 and "|      2 |" in rows[0]  # two EPO jobs in one stage row
    assert figure.stat().st_size > 10_000


def test_peak_memory_script_checks_the_budget(benchmarks, capsys):
    spec = importlib.util.spec_from_file_location("peak_memory", REPO / "scripts" / "peak_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    results = str(benchmarks.parent)
    assert script.main([results]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("largest peak RSS: 1,500 MB (epo/micro-b/L1N3/seed0), within the budget")
    _benchmark(benchmarks / "sae" / "big.tsv", 5.0, 13 * 1024.0, 5.0)
    assert script.main([results]) == 1
    assert "OVER the budget" in capsys.readouterr().out
    assert script.main([str(benchmarks.parent / "nothing")]) == 2
