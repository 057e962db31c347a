"""Rules of workflow/rules/epo.smk: EPO per (model, neuron, method, seed), compared with the data."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from lmfeatures.epo.epo import (
    EPOError,
    Scorer,
    UnitTarget,
    auto_batch_size,
    epo,
    initial_state,
    method_config,
    pareto_front,
)
from lmfeatures.epo.frontier import calibration, compare_with_data, dataset_examples, real_text_xent
from lmfeatures.io import atomic_path, code_version, write_provenance
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.scan.neurons import Neuron
from lmfeatures.store.epo import (
    checkpoint_path,
    load_checkpoint,
    load_runs,
    read_real_text,
    remove_checkpoint,
    save_checkpoint,
    write_compare,
    write_real_text,
    write_run,
)
from lmfeatures.store.models import fingerprint, load_model
from lmfeatures.store.scans import load_scan


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
    ckpt = checkpoint_path(out)
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
            saved = load_checkpoint(ckpt)
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
    # kept until epo_compare reads the run: Snakemake may yet reject this output (a run interrupted
    # with Ctrl-C flags the jobs it let finish as incomplete), and the rerun then resumes from here
    save_checkpoint({"run": run_id, "state": state, "history": history}, ckpt)
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
        write_run(
            tmp,
            df,
            {
                "model": Path(model_dir).name,  # not the path: a results folder can move
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


REAL_TEXT_SLICES = 4000


def epo_fluency(
    *, model_dir: str, scan_dir: str, fluency: list[str], out_json: str, epo_params: dict, seed: int, device: str
) -> None:
    """Cross-entropy of real text under the fluency model: random prompt-length slices of the
    scanned held-out windows, their median and 90th percentile as calibrated fluency thresholds."""
    lm, _ = load_model(_fluency_dir(fluency) or model_dir, resolve_device(device))
    windows = load_scan(scan_dir, model_dir=model_dir).windows.ids
    xents = real_text_xent(HookedModel(lm), windows, int(epo_params["n_tokens"]), REAL_TEXT_SLICES, seed)
    write_real_text(out_json, calibration(xents))


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
    """Per neuron: merge runs, score the dataset's top examples the same way, write compare.json."""
    scorer, tok = build_scorer(model_dir, neuron, epo_params, device, _fluency_dir(fluency))
    hist = load_runs(runs)
    scan = load_scan(scan_dir, model_dir=model_dir)
    data = dataset_examples(scan, Neuron.from_name(neuron), scorer, tok, int(epo_params["n_tokens"]))
    summary = compare_with_data(hist, data, neuron, read_real_text(real_text))
    with atomic_path(out_dir, directory=True) as tmp:
        write_compare(tmp, summary, data)
        write_provenance(tmp, config, config.get("seed"), neuron=neuron)
    for run in runs:  # accepted by Snakemake, since this job started: no rerun will need them
        remove_checkpoint(checkpoint_path(run))
