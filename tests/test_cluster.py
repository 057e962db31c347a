"""The workflow under SLURM, through Snakemake's executor plugin, on a one-node cluster that
tests/cluster/slurm.sh starts (root, Debian packages): every job goes through sbatch, the outputs
equal the local run's, and an EPO job cancelled mid-run resumes from its checkpoint.

Runs where CI or LMFEATURES_SYSTEM_TESTS=1 is set (conftest.py); skipped, with slurm.sh's reason,
where the daemons cannot run (not root, packages not installable)."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from workflow_runs import REPO, comparable, differing_outputs, report_line, snakemake_command

pytestmark = [pytest.mark.cluster, pytest.mark.system]
SLURM_SH = REPO / "tests" / "cluster" / "slurm.sh"
SLURM_ARGS = (
    "--executor",
    "slurm",
    "--workflow-profile",
    str(REPO / "workflow" / "profiles" / "slurm"),
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "2",
    "--default-resources",
    "slurm_account=lmfeatures",  # the account slurm.sh made (the plugin's own guess needs a newer sacct)
)
LONG_EPO = "epo:\n  iterations: 5000\n  checkpoint_every: 100\n"  # a run of ~30 s, to cancel mid-way
EPO_RUN = "results/epo/micro-b/L1N3/seed0"


def interrupt(*_):
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The environment (SLURM_CONF, PATH) of a one-node SLURM running for this module's tests."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[cluster]'")
    folder = tmp_path_factory.mktemp("slurm")
    # a CI time-out sends SIGTERM: raise, so that the daemons are still stopped below
    previous = signal.signal(signal.SIGTERM, interrupt)
    started = subprocess.run(["bash", str(SLURM_SH), "start", str(folder)], capture_output=True, text=True)
    try:
        if started.returncode == 77:
            pytest.skip(started.stdout.strip().splitlines()[-1])
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        env = dict(os.environ)
        exports = (folder / "env").read_text().removeprefix("export ").split()
        for name, value in (e.split("=", 1) for e in exports):
            env[name] = value.replace("$PATH", env["PATH"])
        yield env
    finally:
        subprocess.run(["bash", str(SLURM_SH), "stop", str(folder)], check=False)
        signal.signal(signal.SIGTERM, previous)


def sacct(env: dict, *fields: str) -> list[dict]:
    """The cluster's jobs (allocations, not steps) as dicts of `fields`, since the cluster started
    (sacct's default window starts at today's midnight, which drops jobs of a run that crossed it)."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-a", "-S", "2000-01-01", "-o", ",".join(fields)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines()]


def run_under_slurm(env: dict, workdir: Path, *targets: str, config=(), options=(), background=False):
    """snakemake on config/test.yaml (and the `config` files over it) with the SLURM profile, in
    `workdir`: (return code, output), or (process, log path) with `background`."""
    overlay = ("--configfile", str(REPO / "config" / "test.yaml"), *config) if config else ()
    cmd = snakemake_command(workdir, *SLURM_ARGS, *options, *overlay, targets=targets)
    log = open(workdir / f"snakemake-{time.monotonic_ns()}.log", "w")  # the process writes it; read back by path
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    if background:
        return process, Path(log.name)
    process.wait(timeout=1800)
    return process.returncode, Path(log.name).read_text()


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory, request):
    """The whole DAG on config/test.yaml under SLURM, micro-a's scan as 2 shards and a merge (scan.shards):
    (workdir, snakemake's output); reports its wall time."""
    from micro import save_local_model

    workdir = tmp_path_factory.mktemp("slurm-run")
    save_local_model("qwen3", str(workdir / "local-models" / "qwen3-micro"))
    (workdir / "shards.yaml").write_text("scan: {shards: {micro-a: 2}}\n")
    start = time.monotonic()
    returncode, output = run_under_slurm(slurm, workdir, config=[str(workdir / "shards.yaml")])
    assert returncode == 0, output[-5000:]
    report_line(request, f"\nthe DAG on config/test.yaml under SLURM: {time.monotonic() - start:.0f} s")
    return workdir, output


def test_every_job_goes_through_sbatch_and_outputs_equal_the_local_run(slurm, slurm_run, e2e_run):
    workdir, output = slurm_run
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    ran = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", output, flags=re.M)
    assert len(submitted) == len(ran) - 1 and "localrule all:" in output  # `all` only gathers the targets
    by_id = {job["JobID"]: job for job in sacct(slurm, "JobID", "State", "Comment")}
    rules = set()
    for slurm_id in submitted.values():
        assert by_id[slurm_id]["State"] == "COMPLETED", by_id[slurm_id]
        rules.add(by_id[slurm_id]["Comment"].removeprefix("rule_").split("_wildcards")[0])
    assert rules == set(ran) - {"all"}
    assert ran.count("scan_shard") == 2 and ran.count("scan_merge") == 1
    assert differing_outputs(e2e_run / "results", workdir / "results") == []


def test_a_cancelled_epo_job_resumes_from_its_checkpoint(slurm, slurm_run, tmp_path):
    """scancel one EPO job once it has a checkpoint; the rerun resumes from it and gives what an
    uninterrupted run gives."""
    from lmfeatures.stages.epo import epo_run

    workdir = slurm_run[0]
    (workdir / "long-epo.yaml").write_text(LONG_EPO)
    args = dict(
        config=[str(workdir / "shards.yaml"), str(workdir / "long-epo.yaml")]
    )  # the run's config, then longer EPO
    checkpoint = workdir / Path(EPO_RUN).parent / f".{Path(EPO_RUN).name}.checkpoint.pt"
    process, log = run_under_slurm(slurm, workdir, EPO_RUN, **args, background=True)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.exists(), log.read_text()[-3000:]
        queue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], env=slurm, capture_output=True, text=True)
        [job_id] = [line.split()[0] for line in queue.stdout.splitlines() if " rule_epo_run" in line]
        subprocess.run(["scancel", job_id], env=slurm, check=True)
        assert process.wait(timeout=300) != 0, log.read_text()[-3000:]  # the cancelled job counts as failed
    finally:
        process.kill()
    assert checkpoint.exists() and not (workdir / EPO_RUN).exists()  # nothing half-written

    returncode, output = run_under_slurm(slurm, workdir, EPO_RUN, **args)
    assert returncode == 0, output[-3000:]
    assert "resuming from checkpoint" in (workdir / "results/logs/epo/micro-b/L1N3/seed0.log").read_text()
    assert checkpoint.exists()  # at the last iteration, until epo_compare has read the run
    provenance = json.loads((workdir / EPO_RUN / "provenance.json").read_text())
    epo_run(
        model_dir=str(workdir / "results/models/micro-b"),
        fluency=[],
        out_dir=str(tmp_path / "uninterrupted"),
        neuron="L1N3",
        method="epo",
        seed="0",
        epo_params=provenance["config"]["epo"],
        config={},
        device="cpu",
    )
    resumed, uninterrupted = workdir / EPO_RUN, tmp_path / "uninterrupted"
    assert comparable(resumed / "history.parquet") == comparable(uninterrupted / "history.parquet")
    frontier, expected = (json.loads((d / "frontier.json").read_text()) for d in (resumed, uninterrupted))
    assert frontier == expected


def test_an_unknown_partition_stops_before_any_job(slurm, tmp_path):
    from micro import save_local_model

    save_local_model("qwen3", str(tmp_path / "local-models" / "qwen3-micro"))
    jobs_before = len(sacct(slurm, "JobID"))
    options = ("--default-resources", "slurm_partition=a100")
    returncode, output = run_under_slurm(slurm, tmp_path, options=options)
    assert returncode != 0
    assert "slurm_partition=a100, but this cluster has no partition 'a100' (sinfo lists: debug)" in output
    assert len(sacct(slurm, "JobID")) == jobs_before and not (tmp_path / "results").exists()
