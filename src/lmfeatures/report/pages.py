"""Static neuron pages in the Neuroscope manner, built from sections that each stage contributes.

A `NeuronPage` is a header (navigation, title, same-index links) and a list of sections; the scan
stage adds the dataset sections, and later stages (EPO frontiers, minimal examples, SAE features)
add theirs to the same neuron's page. The dataset sections: summary statistics with the histogram
(inline SVG), direct logit effect, the top examples with every token coloured by activation
(colour scale symmetric around 0, scaled to the neuron's max) shown as a window around the max
token with the full text behind a toggle, then the interval samples and random examples. Pages
link to previous / next neuron, to the same index in other layers, and to the same neuron in the
untrained twin (or trained model).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd
import torch

from lmfeatures.sae.checks import CHECKS
from lmfeatures.scan.neurons import Neuron
from lmfeatures.scan.scan import HIST_BINS
from lmfeatures.store.scans import Scan

BEFORE, AFTER = 50, 10  # tokens shown around the max token, as Neuroscope

CSS = """
body{font-family:system-ui,sans-serif;max-width:72rem;margin:0 auto;padding:1rem 2rem;line-height:1.45}
nav a{margin-right:1rem} .stats td{padding:.1rem .8rem .1rem 0} h2{margin-top:2rem;border-bottom:1px solid #ddd}
.ex{font-family:ui-monospace,monospace;font-size:.82rem;white-space:pre-wrap;background:#fafafa;
border:1px solid #eee;padding:.4rem;margin:.4rem 0;word-break:break-all}
.ex .m{outline:2px solid #000} .act{color:#555;font-size:.8rem;margin-right:.6rem}
details summary{cursor:pointer;color:#555;font-size:.8rem} table.logit td{padding:0 .6rem;font-family:monospace}
.tok{border-radius:2px}
"""


def _colour(value: float, scale: float) -> str:
    a = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    return f"rgba(255,120,0,{a:.2f})" if a >= 0 else f"rgba(30,110,255,{-a:.2f})"


def _token_text(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id])
    return text.replace("\n", "↵\n").replace("\t", "→   ")


def coloured_tokens(tokens: list[str], acts: list[float], scale: float, mark: int | None = None) -> str:
    spans = []
    for i, (t, a) in enumerate(zip(tokens, acts)):
        cls = "tok m" if i == mark else "tok"
        spans.append(
            f'<span class="{cls}" style="background:{_colour(a, scale)}" title="{a:.3f}">{html.escape(t)}</span>'
        )
    return "".join(spans)


def example_html(tokens: list[str], acts: list[float], scale: float, max_pos: int, value: float, label: str) -> str:
    lo, hi = max(0, max_pos - BEFORE), min(len(tokens), max_pos + AFTER + 1)
    short = coloured_tokens(tokens[lo:hi], acts[lo:hi], scale, max_pos - lo)
    full = coloured_tokens(tokens, acts, scale, max_pos)
    return (
        f'<div class="ex"><span class="act">{html.escape(label)} act {value:.3f}</span>'
        f"{'…' if lo else ''}{short}{'…' if hi < len(tokens) else ''}"
        f"<details><summary>full window</summary>{full}</details></div>"
    )


def histogram_svg(counts: torch.Tensor, width: float, w: int = 520, h: int = 140) -> str:
    """Bars of the non-empty range of a zero-anchored histogram; log-scaled heights."""
    nz = torch.nonzero(counts).flatten()
    if len(nz) == 0:
        return "<p>(no data)</p>"
    a, b = int(nz[0]), int(nz[-1]) + 1
    c = counts[a:b].double()
    heights = (c + 1).log() / (c.max() + 1).log()
    bw = w / len(c)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{h - 20 - hv * (h - 30):.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{hv * (h - 30):.1f}" fill="{"#f80" if (a + i) >= HIST_BINS // 2 else "#38f"}">'
        f"<title>[{(a + i - HIST_BINS // 2) * width:.3f}, {(a + i + 1 - HIST_BINS // 2) * width:.3f}): "
        f"{int(c[i])}</title></rect>"
        for i, hv in enumerate(heights.tolist())
    )
    lo, hi = (a - HIST_BINS // 2) * width, (b - HIST_BINS // 2) * width
    return (
        f'<svg width="{w}" height="{h}" role="img"><title>activation histogram (log counts)</title>{bars}'
        f'<text x="0" y="{h - 4}" font-size="11">{lo:.3g}</text>'
        f'<text x="{w}" y="{h - 4}" font-size="11" text-anchor="end">{hi:.3g}</text></svg>'
    )


def page_name(neuron: Neuron) -> str:
    return f"{neuron.name}.html"


@dataclass
class PageSection:
    title: str
    html: str


@dataclass
class NeuronPage:
    """One neuron's page: a header, then sections in the order they were added."""

    title: str  # the browser tab's title
    header: str  # HTML above the first section
    sections: list[PageSection] = field(default_factory=list)

    def add(self, title: str, body: str) -> None:
        self.sections.append(PageSection(title, body))

    def html(self) -> str:
        sections = "\n".join(f"<h2>{s.title}</h2>{s.html}" for s in self.sections)
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>{self.title}</title>
<style>{CSS}</style></head><body>
{self.header}
{sections}
</body></html>"""


def dataset_page(
    model_name: str,
    neuron: Neuron,
    scan: Scan,
    tokenizer,
    token_acts: dict[int, torch.Tensor],
    logit: tuple | None,
    nav: dict[str, str | None],
    same_index: list[tuple[int, float, str | None]],
    twin: tuple[str, str] | None,
    heading: str | None = None,
) -> NeuronPage:
    """A neuron's page with its dataset sections. token_acts maps window id -> [pos] activations of this neuron.
    `neuron` may be any unit with .hook, .index, .layer and .name (an SAE feature: give `heading`)."""
    h, u = neuron.hook, neuron.index
    scale = float(scan.tensor(h, "max")[u])
    ids = scan.windows.ids

    def ex(window: int, label: str, pos: int | None = None, value: float | None = None) -> str:
        """One example, its max token marked: the scan's position and value where the scan kept
        them (top examples), else the max over the positions the scan counted in this window
        (not the context-only ones before valid_from)."""
        acts = token_acts[window].tolist()
        toks = [_token_text(tokenizer, t) for t in ids[window].tolist()]
        if pos is None:
            start = int(scan.windows.valid_from[window])
            pos = start + int(torch.tensor(acts[start:]).argmax())
            value = acts[pos]
        return example_html(toks, acts, scale, pos, value, label)

    stat_names = ["max", "min", "mean", "var", "skew", "kurtosis", "density", "density_above_threshold"]
    stats = "".join(f"<tr><td>{n}</td><td>{float(scan.tensor(h, n)[u]):.4g}</td></tr>" for n in stat_names)
    doc_ids = scan.meta["doc_ids"]
    top = []
    top_window, top_pos, top_values = (scan.tensor(h, f)[:, u] for f in ("top_window", "top_pos", "top_values"))
    for rank, (w, p, v) in enumerate(zip(top_window.tolist(), top_pos.tolist(), top_values.tolist())):
        if w >= 0:
            label = f"#{rank + 1} {doc_ids[int(scan.windows.doc[w])]}:{int(scan.windows.start[w])}"
            top.append(ex(w, label, p, v))
    intervals = []
    iw, share = scan.tensor(h, "interval_window"), scan.tensor(h, "interval_share")
    n_int = iw.shape[0]
    for i in reversed(range(n_int)):
        lo, hi = scale * i / n_int, scale * (i + 1) / n_int
        exs = [ex(int(w), f"interval {i + 1}") for w in iw[i, :, u].tolist() if w >= 0]
        intervals.append(
            f"<h3>({lo:.3g}, {hi:.3g}]: {100 * float(share[i, u]):.3g}% of tokens</h3>"
            + ("".join(exs) or "<p>(no window has its max here)</p>")
        )
    randoms = [ex(int(w), "random") for w in scan.random_windows.tolist()]
    if logit:
        up, down = logit
        rows = "".join(
            f"<tr><td>{html.escape(repr(tokenizer.decode([a])))}</td><td>{va:+.3f}</td>"
            f"<td>{html.escape(repr(tokenizer.decode([b]))) if j < len(down) else ''}</td>"
            f"<td>{f'{down[j][1]:+.3f}' if j < len(down) else ''}</td></tr>"
            for j, ((a, va), (b, _)) in enumerate(zip(up, down + [(0, 0.0)] * (len(up) - len(down))))
        )
        logit_html = (
            f'<table class="logit"><tr><th>promotes</th><th></th><th>suppresses</th><th></th></tr>{rows}</table>'
        )
    else:
        logit_html = "<p>This model has no readable unembedding.</p>"

    def link(label: str, target: str | None) -> str:
        return f'<a href="{target}">{label}</a>' if target else f"<span>{label}</span>"

    same = " ".join(
        (f'<a href="{t}">L{layer}</a>' if t else f"L{layer}") + f" ({mx:.2f})" for layer, mx, t in same_index
    )
    twin_html = link(f"same neuron in {twin[0]}", twin[1]) if twin else ""
    nav_links = f"{link('← previous', nav.get('prev'))} {link('next →', nav.get('next'))} {link('index', 'index.html')}"
    header = f"""<nav>{nav_links}
{twin_html}</nav>
<h1>{html.escape(heading or f"{model_name} · layer {neuron.layer} · neuron {u}")}</h1>
{f"<p>Same index in every layer (max activation): {same}</p>" if same_index else ""}"""
    page = NeuronPage(f"{model_name} {neuron.name}", header)
    scanned = (
        f"<p>{scan.meta['n_tokens']:,} held-out tokens scanned in windows of "
        f"{scan.meta['scan_config']['context_length']}.</p>"
    )
    hist = histogram_svg(scan.tensor(h, "hist")[u], float(scan.tensor(h, "bin_width")[u]))
    page.add("Summary", f'<table class="stats">{stats}</table>\n{scanned}\n{hist}')
    page.add("Direct logit effect (W_out · W_U, the final norm's scale folded in)", logit_html)
    docs = {int(scan.windows.doc[w]) for w in top_window.tolist() if w >= 0}
    cap = scan.meta["scan_config"].get("max_per_document")
    per_doc = f"at most {cap} per document" if cap else "any number per document"
    page.add(
        "Top examples (one per window)",
        f"<p>{len(top)} windows from {len(docs)} documents ({per_doc}).</p>" + "".join(top),
    )
    page.add("Examples by activation interval", "".join(intervals))
    page.add("Random windows", "".join(randoms))
    return page


def _prompt_html(text: str, tail: int = 90) -> str:
    shown = text if len(text) <= tail else "…" + text[-tail:]
    return f"<code>{html.escape(shown.replace(chr(10), '↵'))}</code>"


def epo_section(frontier: list[dict], data_max: float, top: int = 12) -> str:
    """EPO's Pareto-frontier prompts of every seed ({"text", "rescored_target", "rescored_xent",
    "seed"} each), the most activating first, against the neuron's dataset maximum."""
    best = sorted(frontier, key=lambda p: -p["rescored_target"])[:top]
    rows = "".join(
        f"<tr><td>{p['seed']}</td><td>{p['rescored_target']:.3f}</td><td>{p['rescored_target'] / data_max:.2f}</td>"
        f"<td>{p['rescored_xent']:.2f}</td><td>{_prompt_html(p['text'])}</td></tr>"
        for p in best
    )
    return (
        f"<p>{len(frontier)} frontier prompts; the {len(best)} most activating (dataset max {data_max:.3f}). "
        "Cross-entropy: the prompt's fluency, lower is more natural.</p>"
        '<table class="logit"><tr><th>seed</th><th>activation</th><th>/ dataset max</th><th>cross-entropy</th>'
        f"<th>prompt</th></tr>{rows}</table>"
    )


def pruning_page_section(frame, evaluation: dict) -> str:
    """A neuron's pruned examples (rows of stages.prune's table: example, type, prompt, activation,
    changed), one table per example, and the held-out score of the patterns they give."""
    if "skipped" in evaluation:
        return f"<p>Skipped: {html.escape(evaluation['skipped'])}.</p>"

    def f1(scores: dict) -> str:
        return "undefined" if scores["f1"] is None else f"{scores['f1']:.2f}"

    context = (
        " Its layer sees only the current token (parallel attention and MLP), so the patterns can at best tie "
        "the lookup of their own final tokens."
        if evaluation["context_free"]
        else ""
    )
    intro = (
        f"<p>The top examples of {evaluation['n_train_documents']} of its documents pruned to their minimal "
        f"activating example (MAE) and varied one token at a time (positive: keeps ≥ the configured share of "
        f"the MAE's activation; negative: below the lower one). The {evaluation['n_patterns']} distinct patterns "
        f"they give (one per firing token) predict this neuron's firing tokens in {evaluation['n_test_documents']} "
        f"other documents with F1 {f1(evaluation['predictor'])}; their final tokens alone: "
        f"{f1(evaluation['last_token_lookup'])}; a lookup of every token of the training windows: "
        f"{f1(evaluation['token_lookup'])}.{context}</p>"
    )
    tables = []
    for k, (example, rows) in enumerate(frame.groupby("example", sort=True)):
        body = "".join(
            f"<tr><td>{html.escape(r.type)}</td><td>{r.activation:.3f}</td>"
            f"<td>{html.escape(r.changed if isinstance(r.changed, str) else '')}</td>"
            f"<td>{_prompt_html(r.prompt)}</td></tr>"
            for r in rows.itertuples()
        )
        table = (
            '<table class="logit"><tr><th>type</th><th>activation</th><th>changed</th><th>prompt</th></tr>'
            f"{body}</table>"
        )
        tables.append(
            f"<details{' open' if k == 0 else ''}><summary>top example #{example + 1}</summary>{table}</details>"
        )
    return intro + "".join(tables)


def correlated_features_section(features: list[tuple[int, float, str | None]]) -> str:
    """The neuron page's list of the SAE features most correlated with it: (feature, Pearson r, page link)."""
    cells = [(f'<a href="{link}">F{f}</a>' if link else f"F{f}", r) for f, r, link in features]
    rows = "".join(f"<tr><td>{cell}</td><td>{r:+.3f}</td></tr>" for cell, r in cells)
    return f'<table class="stats"><tr><th>feature</th><th>Pearson r over tokens</th></tr>{rows}</table>'


def _value(value) -> str:
    """A check table's number; NaN (not measured) as n/a."""
    if value is None:
        return ""
    return "n/a" if value != value else f"{value:.3f}"


def feature_checks_section(row: dict, thresholds: dict) -> str:
    """An SAE feature's five checks: value, threshold, pass / fail; its best proxy's counts per
    activation bin on the check windows."""
    proxy = repr(row["best_proxy"])
    t = thresholds
    predicted = " ".join(repr(p) for p in row["predicted"])
    checks = [
        (
            "specificity",
            f"precision of {proxy} (its base rate {_value(row['base_rate'])}; lift {_value(row['lift'])})",
            row["precision"],
            f">= {t['specificity']}, lift >= {t['lift']}",
        ),
        ("sensitivity", f"recall of {proxy}", row["recall"], f">= {t['sensitivity']}"),
        (
            "downstream",
            f"Δ log p({predicted or 'no predicted tokens'}) when removed, at {proxy} tokens where it fires "
            f"(share of the whole layer's: {_value(row['downstream_share'])})",
            row["downstream"],
            f"<= -{t['downstream']}, share >= {t['downstream_share']}",
        ),
        (
            "not_a_neuron",
            f"a neuron passes specificity for {proxy}: {'yes' if row.get('neuron_specific') else 'no'}",
            None,
            "specific, and no specific neuron",
        ),
        (
            "universality",
            f"best r with the other run (F{row.get('other_unit', '?')})",
            row.get("other_corr"),
            f">= {t['universality']}",
        ),
    ]
    body = "".join(
        f"<tr><td>{name}</td><td>{html.escape(what)}</td><td>{_value(value)}</td>"
        f"<td>{html.escape(limit)}</td><td>{'pass' if row[f'pass_{name}'] else 'fail'}</td></tr>"
        for name, what, value, limit in checks
    )
    bins = len(row["hist_all"])
    hist = "".join(
        f"<tr><td>({i / bins:.1f}, {(i + 1) / bins:.1f}] × max</td><td>{int(a)}</td><td>{int(b)}</td></tr>"
        for i, (a, b) in enumerate(zip(row["hist_in_proxy"], row["hist_all"]))
    )
    return (
        '<table class="stats"><tr><th>check</th><th>measured</th><th>value</th><th>threshold</th><th></th></tr>'
        f"{body}</table>"
        f"<p>Log-likelihood ratio log P(fires | {html.escape(proxy)}) / P(fires | not): {_value(row['llr'])}. "
        "Firing tokens per activation bin (share of the max on the selection windows), in the proxy class "
        "and in all:</p>"
        f'<table class="stats"><tr><th>activation</th><th>in class</th><th>all</th></tr>{hist}</table>'
    )


def index_page(model_name: str, rows: list[tuple[Neuron, float, float, str]]) -> str:
    body = "".join(
        f'<tr><td><a href="{page_name(n)}">{n.name}</a></td><td>{mx:.3f}</td><td>{conc:.2f}</td>'
        f"<td>{html.escape(tok)}</td></tr>"
        for n, mx, conc, tok in rows
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{model_name} neurons</title>
<style>{CSS} td{{padding:.1rem .8rem}}</style></head><body><h1>{html.escape(model_name)}: selected neurons</h1>
<table><tr><th>neuron</th><th>max act</th><th>token concentration</th><th>most common max token</th></tr>
{body}</table></body></html>"""


@dataclass(frozen=True)
class FeatureUnit:
    """An SAE feature as the page builder addresses a unit."""

    run: str
    layer: int
    index: int

    @property
    def hook(self) -> str:
        return self.run

    @property
    def name(self) -> str:
        return f"F{self.index}"


def page_features(table: pd.DataFrame, n_pages: int) -> list[int]:
    """The features that get pages: passing all checks, then passing specificity (best selection F1
    first), then the highest max activation; live ones only."""
    live = table[table["live"]]
    order = [
        live[live["pass_all"]],
        live[live["pass_specificity"]].sort_values("selection_f1", ascending=False),
        live.sort_values("max", ascending=False),
    ]
    return list(dict.fromkeys(int(u) for part in order for u in part["unit"]))[:n_pages]


def feature_index_page(model: str, run: str, layer: int, rows: list[tuple[int, dict]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("feature", "max", "density", "best proxy", "precision", "recall", *CHECKS))
    body = "".join(
        f'<tr><td><a href="F{u}.html">F{u}</a></td><td>{r["max"]:.3f}</td><td>{r["density"]:.4f}</td>'
        f"<td>{html.escape(str(r['best_proxy']))}</td><td>{_value(r['precision'])}</td><td>{_value(r['recall'])}</td>"
        + "".join(f"<td>{'✓' if r[f'pass_{c}'] else '·'}</td>" for c in CHECKS)
        + "</tr>"
        for u, r in rows
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{model} SAE {run}</title>
<style>{CSS} td{{padding:.1rem .6rem}}</style></head><body>
<h1>{html.escape(model)} · mlp.{layer} SAE run {run}: feature pages</h1>
<table><tr>{head}</tr>{body}</table></body></html>"""


def feature_match_section(row: dict, layer: int) -> str:
    """A feature page's "not a neuron; universality" section from its check-table row."""
    text = (
        f"<p>Most correlated neuron: L{layer}N{int(row['best_neuron'])} (|r| = {row['neuron_corr']:.3f}); "
        f"{100 * row['decoder_top_share']:.1f}% of the decoder row's L1 mass is on its largest neuron "
        f"(L{layer}N{int(row['decoder_top_neuron'])}).</p>"
    )
    if "other_corr" in row:
        text += (
            f"<p>Other run: feature {int(row['other_unit'])} by activation (r = {row['other_corr']:.3f}), "
            f"feature {int(row['other_decoder_unit'])} by decoder direction "
            f"(cos = {row['other_decoder_cos']:.3f}).</p>"
        )
    return text
