"""One end-to-end run of the DAG on config/test.yaml in a temporary directory (budget: < 3 min)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_runs import REPO, differing_outputs, snakemake, snakemake_command

# the rules that only present results: an edit to lmfeatures/report/ may rerun these and nothing else
SUMMARIES = {
    "model_summary",
    "scan_summary",
    "epo_summary",
    "prune_summary",
    "alignment_summary",
    "sae_summary",
    "job_summary",
}
PRESENTATION_JOBS = SUMMARIES | {"neuron_pages", "sae_pages", "report", "all"}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(e2e_run):
    return e2e_run


def test_report_has_model_table_and_curves(run):
    html = (run / "results" / "report" / "index.html").read_text()
    assert "Finding and checking language-model features" in html
    table = html[html.index("<table") : html.index("</table>")]
    for name in ("micro-a", "micro-b", "micro-a-untrained"):
        assert f">{name}<" in table
    for column in ("held-out loss", "unigram baseline", "parameters", "d_mlp"):
        assert column in table
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 1


def test_every_results_folder_has_provenance(run):
    results = run / "results"
    folders = [results / "data" / d for d in ("corpus", "tokenizer", "tokens")]
    folders += [p for p in (results / "models").iterdir()] + [results / "report"]
    for folder in folders:
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["config"]["seed"] == 0 and prov["packages"]["torch"] and prov["python"]
    assert json.loads((results / "data" / "corpus" / "provenance.json").read_text())["corpus"]["content_sha256"]
    assert not list(results.rglob("*.partial"))


def test_trained_models_beat_the_unigram_baseline_and_twins_do_not(run):
    evals = {p.name: json.loads((p / "eval.json").read_text()) for p in (run / "results" / "models").iterdir()}
    unigram = evals["micro-a"]["unigram_heldout_xent_nats"]
    assert evals["micro-a"]["heldout_loss"] < unigram and evals["micro-b"]["heldout_loss"] < unigram
    assert evals["micro-a-untrained"]["heldout_loss"] > unigram
    assert evals["micro-a-untrained"]["training_tokens"] == 0
    assert (run / "results" / "models" / "micro-a" / "training_log.csv").is_file()


def test_rerun_has_nothing_to_do(run):
    out = snakemake(run, "--dry-run").stdout
    assert "Nothing to be done" in out


def _jobs_in_dry_run(out: str) -> set[str]:
    """Rule names in the job-count table that `snakemake --dry-run` prints."""
    table = out[out.index("job ") : out.index("total")]
    return {line.split()[0] for line in table.splitlines()[2:] if line.strip()}


def test_code_change_reruns_the_rules_that_run_it(run, tmp_path):
    """A change under src/lmfeatures/ reruns the rules whose stage module imports it, and only those."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("Snakefile", "workflow", "src", "config", "report"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy2)(REPO / part, repo / part)
    package = repo / "src" / "lmfeatures"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(run),
        "--cores",
        "2",
        "--configfile",
        str(repo / "config" / "test.yaml"),
        "--dry-run",
    ]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}  # the copy's package, not the installed one

    def jobs_after_changing(module: str) -> set[str]:
        with open(package / module, "a") as f:
            f.write("\n# a code change\n")
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        shutil.copy2(REPO / "src" / "lmfeatures" / module, package / module)
        return _jobs_in_dry_run(result.stdout)

    # imported by lmfeatures.stages.report only, which runs every summary
    assert jobs_after_changing("report/models.py") == SUMMARIES | {"report", "all"}
    # imported by lmfeatures.stages.epo only: every EPO job and what reads their results
    assert jobs_after_changing("epo/frontier.py") == {
        *("epo_run", "epo_baseline", "epo_fluency", "epo_compare"),
        *("epo_summary", "prune_summary", "neuron_pages", "report", "all"),
        "job_summary",  # the appendix of job times reads every finished job's benchmark
    }
    # imported by every stage that loads a model (EPO's runs are planned once the selection has rerun)
    assert {"train_model", "scan", "select_neurons", "neuron_pages"} <= jobs_after_changing("lm/hooks.py")
    # presentation: an edit to any report/ module reruns only the summaries, the pages and the report
    for module in sorted((package / "report").glob("*.py")):
        jobs = jobs_after_changing(str(module.relative_to(package)))
        assert jobs and jobs <= PRESENTATION_JOBS, (module.name, sorted(jobs - PRESENTATION_JOBS))


def test_the_first_report_section_needs_only_the_scans_and_the_selection(run):
    """scan_summary reads results/selection/{model}.json, written once per model from its scan, so
    the first report section waits on no EPO, pruning, SAE or page job."""
    cmd = snakemake_command(run, "--dry-run", "--forceall", targets=("results/report/dataset-examples/gallery.md",))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _jobs_in_dry_run(result.stdout)
    assert {"scan", "select_neurons", "scan_summary"} <= jobs
    assert not {j for j in jobs if j.startswith(("epo", "prune", "sae", "alignment")) or j.endswith("pages")}
    selection = json.loads((run / "results" / "selection" / "micro-b.json").read_text())
    assert "L1N3" in selection["epo"] and "L1N3" in selection["prune"]  # EPO's neuron is pruned too
    assert {p["neuron"] for p in selection["pages"]} >= set(selection["prune"])


def test_a_sharded_scan_equals_the_single_job_scan(run, tmp_path):
    """scan.shards: micro-a's scan (block 0 sees one token: many ties) as 3 jobs and a merge, from the
    same trained model, equals the run's single-job scan: tensors, windows, tables and meta."""
    workdir = tmp_path / "sharded"
    for folder in ("results/models/micro-a", "results/data", "local-models"):  # the scan's inputs, with their times
        shutil.copytree(run / folder, workdir / folder)
    overlay = tmp_path / "shards.yaml"
    overlay.write_text("scan: {shards: {micro-a: 3}}\n")
    cmd = snakemake_command(
        workdir, "--configfile", str(REPO / "config" / "test.yaml"), str(overlay), targets=("results/scans/micro-a",)
    )
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(re.findall(r"^localrule scan_shard:", result.stdout + result.stderr, flags=re.M)) == 3
    assert not (workdir / "results" / "scan-shards" / "micro-a").exists() or not any(
        (workdir / "results" / "scan-shards" / "micro-a").iterdir()
    )  # temporary: removed after the merge
    assert differing_outputs(run / "results" / "scans" / "micro-a", workdir / "results" / "scans" / "micro-a") == []


def test_config_typo_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "config" / "test.yaml").read_text().replace("  steps: 80", "  stpes: 80"))
    result = snakemake(tmp_path, "--configfile", str(bad), "--dry-run", check=False)
    assert result.returncode != 0
    assert "config key 'training.stpes': unknown key" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_a_file_where_a_results_folder_goes_stops_before_any_job(tmp_path):
    """Snakemake itself died mid-run with a 40-line NotADirectoryError, its running job left incomplete."""
    (tmp_path / "results" / "models").mkdir(parents=True)
    (tmp_path / "results" / "models" / "micro-a").write_text("not a model")
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert "results/models/micro-a is a file, where the workflow writes a folder: move or delete it" in result.stdout


def test_a_config_of_ones_own_replaces_the_default(tmp_path):
    """--configfile alone: the default config's keys (epo.neurons.layers: [1, 3]) do not apply to a
    two-layer family; an error about a key the file does not set says the value is the schema's."""
    mine = tmp_path / "mine.yaml"
    family = "models:\n  - {name: two, source: train, n_layers: 2, d_model: 32, n_heads: 2, d_mlp: 64}\n"

    def dry_run(text: str) -> subprocess.CompletedProcess:
        mine.write_text(text)
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory"]
        command += [str(tmp_path), "--cores", "2", "--configfile", str(mine), "--dry-run"]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    result = dry_run(family + "epo: {models: [two]}\n")
    assert result.returncode == 0, result.stderr[-3000:]
    result = dry_run(family + "sae: {model: two}\n")  # the default controls include an untrained twin
    assert result.returncode != 0
    assert "config key 'sae.controls'" in result.stdout
    assert f"(not set in {mine}: the schema's default, workflow/schemas/config.schema.yaml)" in result.stdout


def test_the_same_command_recovers_after_a_kill_and_an_interrupt(e2e_run, tmp_path):
    """README: after a SIGKILL (of snakemake and its jobs) or a Ctrl-C, rerun the same command. It
    stopped at "Directory cannot be locked" (--unlock), then at incomplete files (--rerun-incomplete),
    and an EPO run that Ctrl-C let finish was flagged incomplete and recomputed from scratch."""
    from micro import save_local_model

    workdir = tmp_path / "run"
    save_local_model("qwen3", str(workdir / "local-models" / "qwen3-micro"))
    command, log = snakemake_command(workdir), tmp_path / "log"

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(path: Path, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 400
        while not path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert path.exists(), log.read_text()[-3000:]

    process = start()
    wait_for(workdir / "results" / "models" / "micro-b", process)
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and its running jobs
    process.wait()
    assert list((workdir / ".snakemake" / "locks").glob("*.lock"))  # what the kill left

    process = start()
    wait_for(workdir / "results" / "logs" / "epo" / "micro-b" / "L1N3" / "seed0.log", process)
    process.send_signal(signal.SIGINT)  # snakemake alone: it lets its running jobs finish (or all, when late)
    process.wait(timeout=300)

    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert differing_outputs(workdir / "results", e2e_run / "results") == []
    assert not list((workdir / "results" / "epo").rglob("*.checkpoint.pt"))  # removed by epo_compare


def test_scans_pages_and_report_section(run):
    results = run / "results"
    from lmfeatures.store.scans import load_scan

    scan = load_scan(results / "scans" / "micro-b", model_dir=results / "models" / "micro-b")
    assert scan.tensor("mlp.1", "top_values").shape == (5, 64) and scan.tensor("resid.0", "max").numel() == 32
    pages = results / "neurons" / "micro-b"
    assert (pages / "index.html").is_file() and (pages / "L0N3.html").is_file()  # the explicit "0.3"
    page = (pages / "L0N3.html").read_text()
    for part in ("Top examples", "Examples by activation interval", "Direct logit effect", "<svg"):
        assert part in page
    twin_page = (results / "neurons" / "micro-a" / "L0N3.html").read_text()
    assert 'href="../micro-a-untrained/L0N3.html"' in twin_page
    html = (results / "report" / "index.html").read_text()
    assert "Dataset examples" in html and "../neurons/micro-b/" in html


def test_epo_runs_and_dreaming_section(run):
    results = run / "results"
    base = results / "epo" / "micro-b" / "L1N3"
    for run_dir in (base / "seed0", base / "baselines" / "gcg" / "seed0", base / "baselines" / "random" / "seed0"):
        frontier = json.loads((run_dir / "frontier.json").read_text())
        assert frontier["frontier"]
        for point in frontier["frontier"]:  # reported prompts are real strings with the reported activation
            assert abs(point["rescored_target"] - point["target"]) < 1e-4
    compare = json.loads((base / "compare" / "compare.json").read_text())
    assert set(compare["methods"]) == {"epo", "gcg", "random"} and compare["dataset_max"] > 0
    html = (results / "report" / "index.html").read_text()
    assert "Dreaming" in html and "micro-b L1N3" in html


def test_a_hub_style_qwen3_runs_through_scan_pages_and_epo(run):
    """qwen3 had no entry in the architecture table: its hook points are discovered and checked at load."""
    results = run / "results"
    record = json.loads((results / "models" / "qwen3-local" / "eval.json").read_text())
    assert record["architecture"] == "qwen3" and record["hook_points"]["mlp_out"] == "mlp.down_proj"
    assert (results / "neurons" / "qwen3-local" / "L0N3.html").is_file()
    frontier = json.loads((results / "epo" / "qwen3-local" / "L1N3" / "seed0" / "frontier.json").read_text())
    assert frontier["frontier"] and all(abs(p["rescored_target"] - p["target"]) < 1e-4 for p in frontier["frontier"])
    assert "qwen3-local L1N3" in (results / "report" / "index.html").read_text()


def test_pruning_tables_scores_and_report_section(run):
    import pandas as pd

    from lmfeatures.prune.evaluate import PREDICTORS

    results = run / "results"
    for model in ("micro-b", "micro-a-untrained"):
        evaluation = json.loads((results / "prune" / model / "evaluation.json").read_text())
        scored = [r for r in evaluation["neurons"] if "skipped" not in r]
        assert scored and all(0 <= r["mae_activation_share"] for r in scored)
        for r in scored:
            assert all({"precision", "recall", "f1", "tp"} <= r[name].keys() for name in PREDICTORS)
            assert r["n_train_documents"] > 0 and r["context_free"] == (r["layer"] == 0)  # GPT-NeoX, parallel
            table = pd.read_parquet(results / "prune" / model / f"{r['neuron']}.parquet")
            assert {"dataset example", "MAE"} <= set(table["type"])
            assert set(table["type"]) <= {"dataset example", "MAE", "positive", "negative", "neither"}
    html = " ".join((results / "report" / "index.html").read_text().split())  # pandoc wraps long headings
    assert "What exactly does a neuron respond to?" in html and "N2G patterns F1" in html  # the generated summary
    # EPO's neuron (1.3, outside the shared selection) is pruned too, its frontier scored by the patterns
    assert (results / "prune" / "micro-b" / "L1N3.predictor.json").is_file()
    assert "Does the explanation from data cover what optimisation found?" in html
    # and its page has the dataset, EPO and pruning sections
    page = (results / "neurons" / "micro-b" / "L1N3.html").read_text()
    for section in ("Top examples", "EPO: prompts optimised for this neuron", "Minimal activating examples"):
        assert f"<h2>{section}" in page


def test_alignment_inputs_metrics_and_report_section(run):
    from safetensors.torch import load_file

    results = run / "results"
    profiles = load_file(results / "alignment" / "micro-b" / "profiles.safetensors")
    assert set(profiles) == {"embed", "resid.0", "resid.1"} and profiles["resid.1"].shape == (512, 32)
    methods = json.loads((results / "alignment" / "micro-b" / "methods.json").read_text())
    layer = methods["hooks"]["resid.1"]
    assert {"exhaustive", "greedy", "gradient", "isolated", "relaxed"} <= layer.keys()
    assert [g[0] for g in layer["greedy"]] == layer["exhaustive"]  # greedy's own first step finds the same winner
    assert methods["random_features"] == methods["features"][2:] and "other_basis_cosine" in layer["gradient"]
    metrics = json.loads((results / "report" / "alignment" / "metrics.json").read_text())
    assert metrics["twins"]["micro-a"]["twin"] == "micro-a-untrained"
    assert set(metrics["twins"]["micro-a"]["argmax"]["nulls"]) == {"permuted"}
    assert [(p["a"], p["b"]) for p in metrics["sizes"]] == [("micro-a", "micro-b")]
    decoding = metrics["models"]["micro-b"]["methods"]
    assert "gradient_basis_cosine" in decoding["all"] and "random" in decoding
    assert (results / "report" / "alignment" / "claims.png").is_file()
    html = " ".join((results / "report" / "index.html").read_text().split())
    assert "Are features aligned across layers?" in html and "Across layers" in html and "Verdicts" in html
    assert "argmax agreement" in html and "permuted null" in html


def test_sae_runs_checks_pages_and_report_section(run):
    import pandas as pd

    sae = run / "results" / "sae"
    assert sorted(p.name for p in sae.iterdir()) == ["micro-a"]  # test.yaml: no untrained or random control
    for name in ("A", "B"):
        folder = sae / "micro-a" / "L0" / name
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["architecture"] == "topk" and cfg["d_in"] == 64 and cfg["d_sae"] == 256 and cfg["k"] == 4
        assert cfg["metadata"]["hook_name"] == "mlp.0" and (folder / "sae_weights.safetensors").is_file()
        evaluation = json.loads((folder / "evaluation.json").read_text())
        assert evaluation["l0"] == pytest.approx(4.0, abs=0.01) and evaluation["explained_variance"] > 0.5
        assert evaluation["context_free"]  # micro-a's one block runs attention and MLP in parallel
        assert json.loads((folder / "provenance.json").read_text())["run"] == name
    tables = {p.stem: pd.read_parquet(p) for p in (sae / "micro-a" / "L0" / "checks").glob("*.parquet")}
    assert set(tables) == {"A", "B", "neurons"} and len(tables["neurons"]) == 64 and len(tables["A"]) == 256
    columns = {"precision", "lift", "recall", "downstream", "downstream_share", "neuron_corr", "other_corr", "pass_all"}
    assert columns <= set(tables["A"]) and tables["A"]["selection_f1"].notna().all()
    planted = sae / "micro-a" / "L0" / "planted"
    summary = json.loads((planted / "planted.json").read_text())
    assert {p.stem for p in planted.glob("*.parquet")} == {"A", "B", "random-A", "random-B", "neurons"}
    assert len(summary["recovery"]["A"]["cosine"]) == len(summary["planted_classes"]) > 0
    pages = json.loads((sae / "micro-a" / "L0" / "pages" / "pages.json").read_text())["A"]
    assert len(pages) == 4 and (sae / "micro-a" / "L0" / "pages" / "A" / f"F{pages[0]}.html").is_file()
    html = " ".join((run / "results" / "report" / "index.html").read_text().split())
    assert "Sparse autoencoder features" in html and "Seed 004 found full-stop" in html
    assert "neurons of micro-a" in html and "Against the layer’s neurons" in html and "Planted ground truth" in html
    assert "Checks that separate trained from random-decoder on planted data" in html
    assert "a context-free layer" in html and "sae.allow_context_free" in html
    neuron_pages = list((run / "results" / "neurons" / "micro-a").glob("L0N*.html"))
    section = neuron_pages[0].read_text()
    assert "Most correlated SAE features" in section
    links = re.findall(r'href="(\.\./\.\./sae/[^"]+)"', section)
    assert all((neuron_pages[0].parent / link).resolve().is_file() for link in links)


def test_pruning_with_a_fill_mask_model(run, tmp_path):
    """prune.proposer set to a saved fill-mask model: its words become variants; a fill-mask model whose
    words are no tokens of the studied model's skips every neuron with the reason."""
    import pandas as pd
    from micro import save_fill_mask_model
    from transformers import AutoTokenizer

    from lmfeatures.stages.prune import prune_neurons
    from lmfeatures.store.selection import write_selection

    results = run / "results"
    studied = AutoTokenizer.from_pretrained(results / "models" / "micro-b")
    words = [w for w in (studied.decode([t]).strip() for t in range(len(studied))) if w.isalpha()]
    save_fill_mask_model(str(tmp_path / "bert"), words)
    save_fill_mask_model(str(tmp_path / "off"), ["zqxj", "vvkq", "xxjz"])
    params = {**json.loads((results / "prune" / "micro-b" / "provenance.json").read_text())["config"]["prune"]}
    selection = tmp_path / "selection.json"
    write_selection(selection, {"model": "micro-b", "epo": [], "prune": ["L1N3"], "pages": [], "partner_pages": []})
    kwargs = dict(
        model_dir=str(results / "models" / "micro-b"),
        scan_dir=str(results / "scans" / "micro-b"),
        model="micro-b",
        selection_json=str(selection),
        config={},
        seed=0,
        device="cpu",
    )
    prune_neurons(out_dir=str(tmp_path / "ok"), prune_params={**params, "proposer": str(tmp_path / "bert")}, **kwargs)
    table = pd.read_parquet(tmp_path / "ok" / "L1N3.parquet")
    varied = table[table["type"].isin(["positive", "negative", "neither"])]
    assert len(varied) and all(c.split(" → ")[1].strip("'").strip() in words for c in varied["changed"])
    prune_neurons(out_dir=str(tmp_path / "off"), prune_params={**params, "proposer": str(tmp_path / "off")}, **kwargs)
    evaluation = json.loads((tmp_path / "off" / "evaluation.json").read_text())
    assert evaluation["neurons"][0]["skipped"].startswith(f"fill-mask model {tmp_path / 'off'}: only 0.0% of its words")


def test_probe_cli_prints_plain_activations_when_piped(run):
    cmd = [
        sys.executable,
        "-m",
        "lmfeatures",
        "probe",
        "--config",
        str(REPO / "config" / "test.yaml"),
        "--model",
        "micro-b",
        "--layer",
        "1",
        "--neuron",
        "3",
        "--top",
        "3",
        "def f(x):",
    ]
    out = subprocess.run(cmd, cwd=run, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout and "max " in out.stdout and "rank" in out.stdout
    bad = subprocess.run(cmd[:-7] + ["--layer", "9", "--neuron", "0", "x"], cwd=run, capture_output=True, text=True)
    assert bad.returncode == 2 and "out of range" in bad.stderr


def test_probe_cli_lists_sae_features(run):
    cmd = [sys.executable, "-m", "lmfeatures", "probe", "--config", str(REPO / "config" / "test.yaml")]
    cmd += ["--model", "micro-a", "--sae", "results/sae/micro-a/L0/A", "--top", "3", "def f(x):"]
    out = subprocess.run(cmd, cwd=run, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mlp.0" in out.stdout and "feature" in out.stdout.splitlines()[1]
    bad = subprocess.run(
        cmd[:6] + ["--model", "micro-b", "--layer", "1", "--sae", "results/sae/micro-a/L0/A", "--top", "3", "x"],
        cwd=run,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--layer 1, but the SAE at results/sae/micro-a/L0/A reads mlp.0" in bad.stderr


def test_unavailable_hub_model_stops_at_once(tmp_path, monkeypatch):
    cfg = (
        (REPO / "config" / "test.yaml")
        .read_text()
        .replace("models:\n", "models:\n  - {name: ghost, source: nobody-here/ghost-model}\n", 1)
    )
    path = tmp_path / "hub.yaml"
    path.write_text(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = snakemake(tmp_path, "--configfile", str(path), check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "model 'ghost': 'nobody-here/ghost-model' is neither a local directory nor in the Hugging Face cache" in out
    assert not (tmp_path / "results").exists()  # nothing was started, nothing half-written
