"""What jobs ask a scheduler for: sizes from parameter counts, the profiles' dry runs, and the
requests that stop a run before any job is submitted."""

import pytest
import torch
import yaml
from micro import save_local_model
from transformers import AutoModelForCausalLM
from workflow_runs import REPO, snakemake

from lmfeatures.config import ConfigError, load_config
from lmfeatures.lm.models import family_config
from lmfeatures.resources import check_gpu_requests, check_partitions, mem_mb, model_parameters, runtime_minutes


def test_parameter_counts_equal_the_built_models(tmp_path):
    """Counted on the meta device, without weights: the same as the real model's count."""
    config = load_config(REPO / "config" / "config.yaml")
    entry = config["models"][1]
    real = AutoModelForCausalLM.from_config(family_config(entry, config["tokenizer"]["vocab_size"], 128, eos_id=0))
    assert model_parameters(config, entry["name"]) == sum(p.numel() for p in real.parameters())
    assert model_parameters(config, f"{entry['name']}-untrained") == model_parameters(config, entry["name"])
    save_local_model("qwen3", str(tmp_path / "qwen3"))
    config["models"].append({"name": "local", "source": str(tmp_path / "qwen3")})
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "qwen3")
    assert model_parameters(config, "local") == sum(p.numel() for p in saved.parameters())


def test_memory_and_time_grow_with_the_model():
    assert mem_mb(0) == 2500 and mem_mb(1_000_000) == 3000  # start-up cost, then rounded up to 500 MB
    assert mem_mb(410_000_000) == 6000  # pythia-410m: 2500 + 8 bytes per parameter
    assert mem_mb(410_000_000, training=True) == 12500
    assert runtime_minutes(5_000_000, 60) == 60 and runtime_minutes(410_000_000, 60) == 246
    assert runtime_minutes(10**13, 60) == 7 * 24 * 60


def test_gpu_requests_with_device_cpu_are_refused():
    asks = {"default-resources": {"mem_mb": 100}, "set-resources scan": {"gpu": 1}}
    with pytest.raises(
        ConfigError, match=r"'device': 'cpu', but the resources ask for GPUs \(set-resources scan: gpu=1\)"
    ):
        check_gpu_requests("cpu", asks)
    check_gpu_requests("cuda", asks)
    check_gpu_requests("auto", asks)
    check_gpu_requests("cpu", {"set-resources scan": {"gpu": 0}})
    with pytest.raises(ConfigError, match="slurm_extra='--gres=gpu:1'"):
        check_gpu_requests("cpu", {"default-resources": {"slurm_extra": "'--gres=gpu:1'"}})


def test_unknown_partitions_are_refused():
    check_partitions({"default-resources": {"slurm_partition": "'gpu'"}}, ["cpu", "gpu"])
    check_partitions({"set-resources scan": {"slurm_partition": "cpu,gpu"}}, ["cpu", "gpu"])
    with pytest.raises(ConfigError, match=r"slurm_partition=cpu,a100, but this cluster has no partition 'a100' \("):
        check_partitions({"set-resources scan": {"slurm_partition": "cpu,a100"}}, ["cpu", "gpu"])


@pytest.fixture
def workdir(tmp_path):
    save_local_model("qwen3", str(tmp_path / "local-models" / "qwen3-micro"))  # test.yaml's qwen3-local
    return tmp_path


def cuda_config(workdir):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config["device"] = "cuda"
    (workdir / "cuda.yaml").write_text(yaml.safe_dump(config))
    return str(workdir / "cuda.yaml")


def job_resources(dry_run_output: str) -> dict[str, str]:
    """{rule: its resources line} from a dry run's job list."""
    found, rule = {}, None
    for line in dry_run_output.splitlines():
        if line.startswith(("rule ", "checkpoint ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            found[rule] = line.strip()
    return found


def test_the_kubernetes_profile_dry_runs_with_gpus_for_the_device_heavy_rules(workdir):
    """device: cuda on a host without GPUs: jobs are planned with one GPU each where the rule uses
    the device (the pods have the GPUs), none for the summaries."""
    for plugin in ("snakemake_executor_plugin_kubernetes", "snakemake_storage_plugin_fs"):
        pytest.importorskip(plugin, reason="pip install -e '.[cluster]'")
    profile = str(REPO / "workflow" / "profiles" / "kubernetes")
    out = snakemake(workdir, "--workflow-profile", profile, "--configfile", cuda_config(workdir), "--dry-run").stdout
    resources = job_resources(out)
    for rule in ("train_model", "scan", "sae_train", "prune_neurons"):
        assert "gpu=1" in resources[rule] and "mem_mb=" in resources[rule], resources[rule]
    for rule in ("corpus", "scan_summary", "report"):
        assert "gpu=" not in resources[rule].replace("gpu_manufacturer", ""), resources[rule]
    assert "(in storage)" in out  # outputs go through the profile's storage plugin


def test_cuda_without_a_gpu_stops_a_local_run_before_any_job(workdir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = snakemake(workdir, "--configfile", cuda_config(workdir), check=False)
    assert result.returncode != 0 and "'device': 'cuda', but CUDA is not available" in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_a_gpu_request_with_device_cpu_stops_before_any_job(workdir):
    result = snakemake(workdir, "--set-resources", "scan:gpu=1", "--dry-run", check=False)
    assert result.returncode != 0
    assert "the resources ask for GPUs (set-resources scan: gpu=1)" in result.stdout + result.stderr


def test_an_executor_that_is_not_installed_stops_before_any_job(workdir):
    (workdir / "profile").mkdir()
    (workdir / "profile" / "config.yaml").write_text("executor: no-such-cluster\n")
    result = snakemake(workdir, "--workflow-profile", str(workdir / "profile"), check=False)
    assert result.returncode != 0 and "invalid choice: 'no-such-cluster'" in result.stderr
    assert not (workdir / "results").exists()
