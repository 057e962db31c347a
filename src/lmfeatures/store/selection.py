"""results/selection/{model}.json: the neurons every later stage looks at, resolved once per model.

{"model": name,
 "epo": ["L1N122", ...],          # EPO's neurons ([] unless epo.models lists the model)
 "prune": [...],                  # pruning's neurons, EPO's included ([] unless prune.models lists it)
 "pages": [{"neuron", "layer", "index", "max", "token_concentration", "mode_token"}, ...],
                                  # every neuron with a page: the shared selection, the stages' neurons
                                  # and, for an untrained twin, its trained model's selection
 "partner_pages": [...],          # the twin's / trained model's neurons with a page (for links)
 "provenance": {...}}             # as in a folder's provenance.json: commit, packages, the specs above
"""

from __future__ import annotations

from pathlib import Path

from lmfeatures.io import read_json, write_json


def write_selection(path: str | Path, selection: dict) -> None:
    write_json(path, selection)


def read_selection(path: str | Path) -> dict:
    return read_json(path)
