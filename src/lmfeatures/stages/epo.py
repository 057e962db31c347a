"""Rules of workflow/rules/epo.smk: EPO per (model, neuron, method, seed), compared with the data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..epo import EPOError, Scorer, UnitTarget, auto_batch_size, epo, initial_state, method_config, pareto_front
from ..frontier import calibration, compare_with_data, dataset_examples, real_text_xent
from ..hooks import HookedModel
from ..io import atomic_path, code_version, write_json, write_provenance
from ..models import load_model, resolve_device
from ..neurons import Neuron, NeuronSpec, resolve_neurons
from ..report.dreaming import dreaming_section, frontier_figure
from ..report.render import report_path
from ..scan import fingerprint, load_scan


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Written under a temporary name and renamed, so a job killed mid-save leaves the last good one."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def build_scorer(model_dir: str, neuron_text: str, params: dict, device: str, fluency_dir: str | None = None):
    """(Scorer, tokenizer) for neuron 'L{layer}N{index}' of a saved model, checked before any compute."""
    dev = resolve_device(device)
    model, tok = load_model(model_dir, dev)
    hooked = HookedModel(model)
    neuron = Neuron.from_name(neuron_text)
    hooked.check_hook(neuron.hook)
    if not 0 <= neuron.index < hooked.d_mlp:
        raise EPOError(
            f"neuron {neuron_text}: index {neuron.index} is outside layer {neuron.layer} (0-{hooked.d_mlp - 1})"
        )
    fluency = None
    if fluency_dir:
        f_model, f_tok = load_model(fluency_dir, dev)
        if f_tok.get_vocab() != tok.get_vocab():
            raise EPOError(
                f"the fluency model at {fluency_dir} has a different tokenizer than {model_dir}; "
                "EPO needs the same token ids in both"
            )
        fluency = HookedModel(f_model)
        if fluency.vocab_size != hooked.vocab_size:  # the one-hot feeds both embeddings
            raise EPOError(
                f"the fluency model at {fluency_dir} has {fluency.vocab_size} embedding rows, {model_dir} has "
                f"{hooked.vocab_size}; EPO needs the same token ids and embedding sizes in both"
            )
    position = params.get("position", "last")
    target = UnitTarget(neuron.hook, neuron.index, position=position)
    proposal = None
    if params.get("proposal_gradient", "pre_activation") == "pre_activation":
        proposal = UnitTarget(f"mlp_pre.{neuron.layer}", neuron.index, position=position)
        hooked.check_hook(proposal.hook)
    batch_size = params.get("batch_size") or auto_batch_size(hooked, fluency, int(params["n_tokens"]))
    return Scorer(hooked, target, fluency, batch_size, proposal), tok


def _fluency_dir(fluency: list[str]) -> str | None:
    """The rule gives the fluency model's folder as a list: empty when the model scores fluency itself."""
    return fluency[0] if fluency else None


def load_runs(run_dirs: list[str]) -> pd.DataFrame:
    """Every scored candidate of these runs: text, target, xent, method, seed."""
    runs = []
    for d in run_dirs:
        meta = json.loads((Path(d) / "frontier.json").read_text())
        h = pd.read_parquet(Path(d) / "history.parquet", columns=["text", "target", "xent"])
        h["method"], h["seed"] = meta["method"], meta["seed"]
        runs.append(h)
    return pd.concat(runs, ignore_index=True)


def epo_neurons(*, scan_dir: str, model_dir: str, out_json: str, selection: dict, seed: int) -> None:
    """Which neurons get EPO runs: the shared `neurons:` selection with `epo.neurons` overrides."""
    scan = load_scan(scan_dir, model_dir=model_dir)
    chosen = resolve_neurons(scan, NeuronSpec(**selection, seed=seed))
    write_json(out_json, [n.name for n in chosen])


def epo_run(
    *,
    model_dir: str,
    fluency: list[str],
    out_dir: str,
    neuron: str,
    method: str,
    seed: str,
    epo_params: dict,
    config: dict,
    device: str,
) -> None:
    """One EPO / GCG / random run: history.parquet, frontier.json, provenance.json; resumes from its checkpoint."""
    seed = int(seed)
    cfg = method_config(method, epo_params, seed)
    scorer, tok = build_scorer(model_dir, neuron, epo_params, device, _fluency_dir(fluency))
    out = Path(out_dir)
    ckpt = out.parent / f".{out.name}.checkpoint.pt"
    # resume only the same run: same settings, same code, same model and fluency model
    run_id = {
        "config": cfg.__dict__,
        "params": epo_params,
        "code": code_version(__name__),
        "model": fingerprint(model_dir),
        "fluency": fluency and fingerprint(fluency[0]),
    }
    history: list[dict] = []
    state = None
    if ckpt.exists():
        try:
            saved = torch.load(ckpt, weights_only=False, map_location="cpu")  # written on any device
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is only a lost head start
            saved = {}
            print(f"ignoring checkpoint {ckpt}: it cannot be read ({type(err).__name__})", file=sys.stderr)
        if saved.get("run") == run_id:
            state, history = saved["state"].to(scorer.model.device), saved["history"]
            print(f"resuming from checkpoint {ckpt} at iteration {state.iteration}", file=sys.stderr)
        elif saved:
            print(f"ignoring checkpoint {ckpt}: it was made with other settings, code or model", file=sys.stderr)
    bar = tqdm(
        total=cfg.iterations,
        initial=state.iteration if state else 0,
        desc=f"{method} {neuron} s{seed}",
        unit="it",
        mininterval=2.0,
    )

    def record(r: dict) -> None:
        for ids, t, x, k in zip(r["ids"].tolist(), r["target"].tolist(), r["xent"].tolist(), r["kept"].tolist()):
            history.append(
                {
                    "iteration": r["iteration"],
                    "ids": ids,
                    "target": t,
                    "xent": x,
                    "kept": k,
                    "restart_lambda": r["restart"],
                    "reinitialised": r["reinitialised"],
                    "seconds": r["seconds"],
                }
            )
        bar.update(1 if r["iteration"] else 0)  # iteration 0 is the initial population
        bar.set_postfix(best=f"{max(h['target'] for h in history):.3f}")
        if r["iteration"] % epo_params["checkpoint_every"] == 0 and r["iteration"]:
            save_checkpoint({"run": run_id, "state": state, "history": history}, ckpt)

    if state is None:  # the initial population is part of the history (iteration 0)
        state = initial_state(scorer, tok, cfg)
        kept = torch.ones(len(state.ids), dtype=torch.int64)
        record(
            {
                "iteration": 0,
                "ids": state.ids.cpu(),
                "target": state.target.cpu(),
                "xent": state.xent.cpu(),
                "kept": kept,
                "restart": None,
                "reinitialised": False,
                "seconds": 0.0,
            }
        )
    epo(scorer, tok, cfg, state, record)  # updates `state` in place, which record() checkpoints
    bar.close()
    df = pd.DataFrame(history)
    df["text"] = tok.batch_decode(df["ids"].tolist())
    front = pareto_front(torch.tensor(df["target"].values), torch.tensor(df["xent"].values)).tolist()
    rows = df.iloc[front]
    # the retokenization check, end to end: the decoded strings, re-encoded, give the reported activation
    ids = torch.tensor(tok(list(rows["text"]), add_special_tokens=False)["input_ids"], device=scorer.model.device)
    rescored, rexent = scorer.score(ids)
    frontier = [
        {
            "text": r.text,
            "ids": r.ids,
            "target": r.target,
            "xent": r.xent,
            "rescored_target": float(t),
            "rescored_xent": float(x),
        }
        for r, t, x in zip(rows.itertuples(), rescored.tolist(), rexent.tolist())
    ]
    with atomic_path(out, directory=True) as tmp:
        df.to_parquet(tmp / "history.parquet")
        write_json(
            tmp / "frontier.json",
            {
                "model_dir": model_dir,
                "neuron": neuron,
                "method": method,
                "seed": seed,
                "config": cfg.__dict__,
                "n_scored": len(df),
                "frontier": frontier,
            },
        )
        seconds = float(df.groupby("iteration")["seconds"].first().sum())
        write_provenance(tmp, config, seed, neuron=neuron, method=method, seconds=seconds)
    ckpt.unlink(missing_ok=True)


REAL_TEXT_SLICES = 4000


def epo_fluency(
    *, model_dir: str, scan_dir: str, fluency: list[str], out_json: str, epo_params: dict, seed: int, device: str
) -> None:
    """Cross-entropy of real text under the fluency model: random prompt-length slices of the
    scanned held-out windows, their median and 90th percentile as calibrated fluency thresholds."""
    lm, _ = load_model(_fluency_dir(fluency) or model_dir, resolve_device(device))
    windows = load_scan(scan_dir, model_dir=model_dir).windows.ids
    xents = real_text_xent(HookedModel(lm), windows, int(epo_params["n_tokens"]), REAL_TEXT_SLICES, seed)
    write_json(out_json, calibration(xents))


def epo_compare(
    *,
    model_dir: str,
    scan_dir: str,
    runs: list[str],
    fluency: list[str],
    real_text: str,
    out_dir: str,
    neuron: str,
    epo_params: dict,
    config: dict,
    device: str,
) -> None:
    """Per neuron: merge runs, score the dataset's top examples the same way, write compare.json and the figure."""
    scorer, tok = build_scorer(model_dir, neuron, epo_params, device, _fluency_dir(fluency))
    hist = load_runs(runs)
    scan = load_scan(scan_dir, model_dir=model_dir)
    data = dataset_examples(scan, Neuron.from_name(neuron), scorer, tok, int(epo_params["n_tokens"]))
    summary = compare_with_data(hist, data, neuron, json.loads(Path(real_text).read_text()))
    with atomic_path(out_dir, directory=True) as tmp:
        write_json(tmp / "compare.json", summary)
        data.to_parquet(tmp / "dataset_examples.parquet")
        frontier_figure(hist, data, summary, neuron, tmp / "frontier.png")
        write_provenance(tmp, config, config.get("seed"), neuron=neuron)


def epo_summary(
    *, compares: list[str], figure: str, section: str, labels: list[str], runs_per_key: list[list[str]]
) -> None:
    """The report's Dreaming section from every (model, neuron)'s comparison and runs; labels '{model} {neuron}'."""
    compare_dirs = dict(zip(labels, compares))
    summaries = {k: json.loads((Path(d) / "compare.json").read_text()) for k, d in compare_dirs.items()}
    data = {k: pd.read_parquet(Path(d) / "dataset_examples.parquet") for k, d in compare_dirs.items()}
    all_runs = {k: load_runs(dirs) for k, dirs in zip(labels, runs_per_key)}
    dreaming_section(summaries, all_runs, data, figure, section, figure_ref=report_path(figure))
