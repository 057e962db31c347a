"""Stage entry points: one module per rule file, one function per rule, named after the rule.

    workflow/rules/{stage}.smk -> lmfeatures.stages.{stage}
    compute:      data, models, scans, epo, prune, alignment, sae
    presentation: pages, report (every *_summary rule, the pages, the rendered report)

A stage function chooses paths, reads its inputs through lmfeatures.store (the only code that opens
a results file), calls the algorithm modules (which never touch files) and writes its outputs
atomically. No stage imports another, and no compute stage imports lmfeatures.report, so a figure
edit reruns presentation jobs only (tests/test_layout.py). Its arguments are keyword-only and
carry the names of the rule's named inputs, outputs, params and wildcards, so a rule's script is
two lines:

    from lmfeatures.stages import run_rule
    from lmfeatures.stages.scans import scan

    run_rule(scan, snakemake)

Stage functions are plain Python and are called directly in the tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from lmfeatures.io import log_stderr

# Params that are for Snakemake only: `code` is the hash of the package modules a rule runs, so
# that a code change reruns the rule (see lmfeatures.io.code_version).
SNAKEMAKE_ONLY_PARAMS = ("code",)


class RuleWiringError(TypeError):
    """A rule's named inputs / outputs / params / wildcards do not match its stage function."""


def _named(items) -> dict[str, Any]:
    """The named entries of a Snakemake Namedlist (inputs, outputs, params, wildcards)."""
    return dict(items.items())


def rule_arguments(stage: Callable, smk) -> dict[str, Any]:
    """Keyword arguments for `stage` from a Snakemake job: its named inputs, outputs, params and
    wildcards, plus `threads`. A name given twice, a missing argument, or an output or param the
    stage does not take is an error naming the rule. An input the stage does not take is only a
    dependency (e.g. run folders a summary finds through a param), and a wildcard it does not take
    is already in its paths."""
    wanted = inspect.signature(stage).parameters
    sources = {
        "input": {k: v for k, v in _named(smk.input).items() if k in wanted},
        "output": _named(smk.output),
        "params": {k: v for k, v in _named(smk.params).items() if k not in SNAKEMAKE_ONLY_PARAMS},
        "wildcards": {k: v for k, v in _named(smk.wildcards).items() if k in wanted},
    }
    kwargs: dict[str, Any] = {}
    given: dict[str, str] = {}
    for source, items in sources.items():
        for name, value in items.items():
            if name in given:
                raise RuleWiringError(f"rule {smk.rule}: {name!r} is named in both {given[name]} and {source}")
            given[name] = source
            kwargs[name] = value
    if "threads" in wanted:
        kwargs["threads"] = smk.threads
    unused = sorted(set(kwargs) - set(wanted))
    missing = sorted(n for n, p in wanted.items() if p.default is inspect.Parameter.empty and n not in kwargs)
    if unused or missing:
        raise RuleWiringError(
            f"rule {smk.rule} does not match {stage.__module__}.{stage.__name__}: "
            f"unused {unused or 'none'}, missing {missing or 'none'}"
        )
    return kwargs


def run_rule(stage: Callable, smk) -> None:
    """What every rule script does: set the job's thread count, copy stderr into the job's log, run the stage."""
    torch.set_num_threads(smk.threads)
    with log_stderr(smk.log[0]):
        stage(**rule_arguments(stage, smk))
