"""Words and tables generated from ``metrics/summary.json``: README's results block and the research answers (all four;
Q3 also reads the benchmark files, so only the report stage, which has them, can give its answer).

Every sentence is built from the records (lmask.summary), and every comparative word comes from a Holm-corrected
test within its family (``lmask.stats.verdict``: "better" / "worse" only where it rejects "no difference", which
implies the 95 % interval shown excludes zero). Nothing here hard-codes a schedule's name or shape: windows, sinks
and pairs are read from each record.
"""

from __future__ import annotations

from typing import Any

from lmask.stats import TOO_FEW
from lmask.summary import BASELINE, DOMAIN_ROLE, EVAL_DOMAINS

Records = dict[str, dict[str, Any]]


def pct(value: float, ci: list[float] | None) -> str:
    if ci is None:
        return f"{value:+.2f}% [{TOO_FEW}]"
    return f"{value:+.2f}% [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def gap_cell(g: dict[str, Any]) -> str:
    """A comparison: point estimate, interval, per-baseline estimates, and its word."""
    runs = ", ".join(f"{x:+.2f}" for x in g["pct_baselines"])
    return f"{pct(g['pct'], g['pct_ci95'])} ({runs}): {g['verdict']}"


def windows_text(rec: dict[str, Any]) -> str:
    shown = " ".join("-" if w is None else str(w) for w in rec["windows"])
    return f"[{shown}]" + (f" + {rec['sinks']} sinks" if rec["sinks"] else "")


def schedules(records: Records) -> list[str]:
    return [n for n in records if n != BASELINE]


def windowed(records: Records) -> list[str]:
    return [n for n in schedules(records) if "vs_full_pct" in records[n]]


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def results_rows(records: Records) -> list[dict[str, str]]:
    """README's table: quality of every model with intervals and seeds."""
    base = records[BASELINE]
    rows = [
        {
            "model": BASELINE,
            "windows (layer 0..)": "full everywhere",
            "windowed layers": "0",
            "attention pairs": "1.00",
            "test ppl (per baseline)": _ppl(base),
            "vs full control, fine-tuned": "n/a",
            "zero-shot vs baseline": "n/a",
            "code: vs full": "n/a",
            "repeated text: vs full": "n/a",
        }
    ]
    for name in schedules(records):
        r = records[name]
        has_full = "vs_full_pct" in r
        rows.append(
            {
                "model": name,
                "windows (layer 0..)": windows_text(r),
                "windowed layers": str(r["windowed_layers"]),
                "attention pairs": f"{r['attention_pairs']:.2f}",
                "test ppl (per baseline)": _ppl(r),
                "vs full control, fine-tuned": gap_cell(r["domains"]["test"]["vs_full"])
                if has_full
                else "(the control)",
                "zero-shot vs baseline": gap_cell(r["gaps"]["zero_shot_vs_baseline"]),
                "code: vs full": _domain(r, "code"),
                "repeated text: vs full": _domain(r, "repeated"),
            }
        )
    return rows


def _domain(rec: dict[str, Any], domain: str) -> str:
    if "domains" not in rec:
        return "(the control)"
    return gap_cell(rec["domains"][domain]["vs_full"])


def _ppl(rec: dict[str, Any]) -> str:
    return f"{rec['test_ppl']:.1f} ({', '.join(f'{x:.1f}' for x in rec['test_ppl_baselines'])})"


def position_rows(records: Records) -> list[dict[str, str]]:
    """Fine-tuned vs the full control by query position: where the windows bind (positions past a layer's window)."""
    rows = []
    for name in windowed(records):
        rows.append({"model": name, **{f"positions {b}": gap_cell(g) for b, g in records[name]["by_position"].items()}})
    return rows


def copy_rows(records: Records) -> list[dict[str, str]]:
    """Copy gain (nats) per probe distance: the baseline, then each schedule zero-shot and fine-tuned."""
    base = records[BASELINE]["copy_loss_drop"]
    rows = [{"model": f"{BASELINE} (gate)", **{f"d={d}": f"{_nats(e)}: {_gate(e)}" for d, e in base.items()}}]
    for name in schedules(records):
        for variant, gains in records[name]["copy_gain"].items():
            rows.append(
                {"model": f"{name} ({variant.replace('_', '-')})", **{f"d={d}": _nats(e) for d, e in gains.items()}}
            )
    return rows


def generation_rows(records: Records) -> list[dict[str, str]]:
    """Seeded samples continuing long test prompts: BLEU and the true continuation's NLL, with intervals over runs and
    prompts, and what makes BLEU readable (distinct-2, share of looping samples)."""
    rows = []
    for name, rec in records.items():
        g = rec["generation"]
        if not g.get("prompts"):
            continue
        rows.append(
            {
                "model": name,
                "prompts": str(g["prompts"]),
                "BLEU (95% CI)": _interval(g["bleu"], 2),
                "NLL of the true continuation (95% CI)": _interval(g["continuation_nll"], 3),
                "distinct-2": f"{g['distinct_2']:.3f}",
                "degenerate samples": f"{g['degenerate_fraction']:.0%}",
            }
        )
    return rows


def _interval(e: dict[str, Any], digits: int) -> str:
    if e["ci95"] is None:
        return f"{e['value']:.{digits}f} [{TOO_FEW}]"
    return f"{e['value']:.{digits}f} [{e['ci95'][0]:.{digits}f}, {e['ci95'][1]:.{digits}f}]"


def _nats(e: dict[str, Any]) -> str:
    if e["ci95"] is None:
        return f"{e['value']:+.4f} [{TOO_FEW}]"
    return f"{e['value']:+.4f} [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]"


def _gate(e: dict[str, Any]) -> str:
    return "passes" if e["verdict"] == "better" else "fails"


def scale_note(meta: dict[str, Any]) -> str:
    docs = ", ".join(f"{d}: {n}" for d, n in meta["documents"].items())
    return (
        f"Scale: {meta['n_layer']} layers x {meta['n_embd']} wide, vocabulary {meta['vocab_size']}, context "
        f"{meta['context']}; {meta['n_baselines']} baselines of {meta['train_steps']} steps, each fine-tuned "
        f"{meta['masked_steps']} steps per schedule with {meta['n_seeds']} seeds (other data orders); periodic text "
        f"(a segment of the row repeated) in {meta['mix_fraction']:.0%} of training rows. Training blocks never "
        f"cross a document boundary. Held-out documents scored: {docs}. These are small models trained briefly on a "
        "small corpus; effect sizes need not transfer to GPT-2 small on WikiText-103."
    )


def method_note(meta: dict[str, Any]) -> str:
    return (
        f"Intervals: {meta['confidence']:.0%}, over baselines, fine-tuning seeds and documents (t interval on the "
        "sum of the run-to-run variance of the per-baseline estimates and the across-document variance, "
        "lmask/stats.py); the per-baseline estimates in brackets. Paired: the same baseline, seed, data order and "
        f"documents on both sides. Fewer than 10 documents give no interval ({TOO_FEW}). Words: Holm-corrected "
        'within each column (family), so "better"/"worse" appear only where the corrected test rejects no '
        f"difference. Copy gate: gain above {meta['min_gain']} nats, one-sided, Holm across distances, "
        f"{meta['copy_sequences']} probe sequences per baseline; each schedule's probe runs zero-shot on the first "
        f"{meta['schedule_copy_sequences']}. The test domain is scored for every fine-tuned run; code, repeated text "
        "and generation for the first fine-tuning seed of each baseline (CPU budget)."
    )


Q3 = "Q3. What efficiency does each schedule buy, for what quality?"
# Q3's answer where the benchmark files are not at hand: the summarize stage does not wait for the benchmark.
Q3_ELSEWHERE = (
    'Answered with the measured speed at the end of metrics/benchmark.md (docs/results.md, "Speed and memory"), '
    "which the report stage writes from the benchmark: this summary does not wait for the benchmark."
)


def research_answers(
    records: Records, meta: dict[str, Any], benchmark: dict[str, dict] | None = None
) -> list[tuple[str, str]]:
    """The seed's questions and their answers; Q3's needs the benchmark files (``None``: it says where it is)."""
    return [
        ("Q1. Can deeper layers work with restricted attention windows?", q1(records)),
        ("Q2. Which progression works best, at equal attention pairs?", q2(records)),
        (Q3, Q3_ELSEWHERE if benchmark is None else q3(records, benchmark)),
        ("Q4. Which text is most amenable to windows?", q4(records)),
    ]


def q1_gate(records: Records) -> str:
    """Q1's first sentence: whether the baselines use distant context at all (the copy gate)."""
    base = records[BASELINE]
    reach = base.get("copy_range")
    gate = base["copy_loss_drop"]
    if reach is None:
        best = max(gate, key=lambda d: gate[d]["value"])
        return (
            f"The baselines' copy gain passes the gate at no probed distance ({', '.join(gate)} tokens; largest "
            f"{_nats(gate[best])} nats at d = {best}): this scale shows no use of distant context that the probe "
            "can detect, so Q1 is not testable here."
        )
    return (
        f"The baselines use distant context: their copy gain passes the gate up to d = {reach} tokens "
        f"({_nats(gate[str(reach)])} nats), so a window shorter than that can remove something."
    )


def q1(records: Records) -> str:
    reach = records[BASELINE].get("copy_range")
    head = q1_gate(records)
    if reach is None:
        head += (
            " Windows cannot remove long-range use the model does not have; the gaps below measure what windows "
            "cost these models' (short-range) predictions."
        )
    parts = [head]
    for name in windowed(records):
        r = records[name]
        far_label, far = list(r["by_position"].items())[-1]
        parts.append(
            f"{name} {windows_text(r)}: fine-tuned, {compared(r['vs_full'], 'the full control')} "
            f"({gap_cell(r['gaps']['vs_full'])}), and at query positions {far_label}, where every windowed layer "
            f"binds, {gap_cell(far)}; zero-shot, {compared(r['zero_shot_vs_baseline'], 'the baselines')} "
            f"({gap_cell(r['gaps']['zero_shot_vs_baseline'])})." + _copy_loss(r, reach)
        )
    return " ".join(parts)


def compared(word: str, reference: str) -> str:
    """ "better than X" / "worse than X" / "no clear difference from X"."""
    return f"no clear difference from {reference}" if word == "no clear difference" else f"{word} than {reference}"


def _copy_loss(rec: dict[str, Any], reach: int | None) -> str:
    if reach is None:
        return ""
    e = rec["copy_gain"]["zero_shot"][str(reach)]
    return f" At d = {reach} its zero-shot copy gain is {_nats(e)} nats."


def q2(records: Records) -> str:
    parts = []
    done = set()
    for name in windowed(records):
        for other, g in records[name].get("vs_equal_pairs", {}).items():
            if (other, name) in done:
                continue
            done.add((name, other))
            verdict = (
                f"no clear difference between {name} and {other}"
                if g["verdict"] == "no clear difference"
                else f"{name} is {g['verdict']} than {other}"
            )
            parts.append(
                f"{name} vs {other} (pairs {records[name]['attention_pairs']:.2f} vs "
                f"{records[other]['attention_pairs']:.2f}): {verdict} ({gap_cell(g)})."
            )
    if not parts:
        return "No two schedules have equal attention pairs (within 0.02), so progressions are not compared here."
    return "Fine-tuned, paired by run and test document: " + " ".join(parts)


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated in (cost, gap), both lower-is-better, in order of cost."""
    front = [
        n
        for n, (c, g) in points.items()
        if not any((c2 <= c and g2 <= g) and (c2 < c or g2 < g) for m, (c2, g2) in points.items() if m != n)
    ]
    return sorted(front, key=lambda n: points[n][0])


def largest_t_speedups(benchmark: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Per schedule: its forward record at the largest benchmarked T (where windows can pay)."""
    out = {}
    for name, f in benchmark.items():
        fwd = [r for r in f["records"] if r["mode"] == "fwd"]
        if name != "kernel" and fwd:
            out[name] = max(fwd, key=lambda r: r["seq_len"])
    return out


def q3(records: Records, benchmark: dict[str, dict]) -> str:
    """Efficiency vs quality: cost in pairs and measured speed beside each gap; who is on the Pareto front.
    ``benchmark``: the benchmark files by stem (each schedule's, and ``kernel``)."""
    recs = {n: r for n, r in records.items() if "vs_full_pct" in r}
    if not recs:
        return "No windowed schedule to compare."
    speed = largest_t_speedups(benchmark)
    points = {n: (r["attention_pairs"], r["vs_full_pct"]) for n, r in recs.items()}
    full = next((n for n in records if n != BASELINE and n not in recs), None)
    if full is not None:
        points[full] = (1.0, 0.0)  # the control: all pairs, no gap
    front = pareto(points)
    parts = []
    for name, r in recs.items():
        s = speed.get(name)
        timing = (
            f", {s['speedup']:.2f}x measured speedup at T={s['seq_len']} (ceiling {s['ceiling']:.2f}x, rounds "
            f"{min(s['round_speedups']):.2f}-{max(s['round_speedups']):.2f})"
            if s
            else ", not timed"
        )
        own = [e for e in benchmark.get(name, {}).get("experiment", {}).get("records", []) if e["mode"] == "fwd_bwd"]
        timing += "".join(
            f", {e['speedup']:.2f}x fwd+bwd on the evaluated models' own dims at T={e['seq_len']} (ceiling "
            f"{e['ceiling']:.2f}x)"
            for e in own
        )
        parts.append(
            f"{name}: {r['attention_pairs']:.2f} of full attention's pairs{timing}; quality "
            f"{compared(r['vs_full'], 'the full control')} ({pct(r['vs_full_pct'], r['vs_full_pct_ci95'])})."
        )
    return (
        " ".join(parts)
        + f" On the point estimates the Pareto front (fewest pairs for the smallest gap) is {', '.join(front)};"
        " where intervals overlap, the ordering along it is not established."
    )


def q4(records: Records) -> str:
    parts = [f"Domains: {'; '.join(f'{d}: {DOMAIN_ROLE[d]}' for d in EVAL_DOMAINS)}."]
    for name in windowed(records):
        dom = records[name]["domains"]
        cells = [f"{d} {gap_cell(dom[d]['vs_full'])}" for d in EVAL_DOMAINS]
        parts.append(f"{name} vs full: " + ", ".join(cells) + ".")
    return " ".join(parts)


def headline_markdown(records: Records, meta: dict[str, Any], source: str) -> str:
    """README's short results block: each windowed schedule against the full control and zero-shot, and Q1's gate.
    ``source``: the summary file ``records`` came from (named in the block's marker comment)."""
    rows = [
        {
            "schedule": name,
            "windows (layer 0..)": windows_text(records[name]),
            "attention pairs": f"{records[name]['attention_pairs']:.2f}",
            "fine-tuned vs full control": gap_cell(records[name]["gaps"]["vs_full"]),
            "zero-shot vs baselines": gap_cell(records[name]["gaps"]["zero_shot_vs_baseline"]),
        }
        for name in windowed(records)
    ]
    base = records[BASELINE]
    return "\n".join(
        [
            f"<!-- generated by `python -m lmask.readme` from {source}; do not edit -->",
            "",
            f"Test perplexity change (negative = better): estimate [95% interval over {meta['n_baselines']} baselines, "
            f"{meta['n_seeds']} fine-tuning seeds each and {base['test_documents']['test']} test articles] (one "
            f"estimate per baseline): Holm-corrected word. Baselines: test ppl {_ppl(base)}, unigram floor "
            f"{base['test_unigram_ppl']:.1f}.",
            "",
            markdown_table(rows),
            "",
            f"**Q1.** {q1_gate(records)}",
            "",
        ]
    )


def summary_markdown(records: Records, meta: dict[str, Any]) -> str:
    """metrics/summary.md: the generated results (docs/results.md; README shows its headline)."""
    lines = [
        "<!-- generated by `dvc repro summarize` (lmask/tables.py) from metrics/summary.json; do not edit -->",
        "",
        "Perplexity change in % (negative = better) against the full-attention control fine-tuned the same way, and "
        "zero-shot (a baseline's weights under the schedule's windows, no training) against the baselines. Each cell: "
        "estimate [95% interval] (one estimate per baseline): word.",
        "",
        markdown_table(results_rows(records)),
        "",
        "Fine-tuned vs the full control by query position (test documents): a window of w binds at positions w and "
        "beyond.",
        "",
        markdown_table(position_rows(records)),
        "",
        "Copy gain in nats: the loss drop on a natural span's second occurrence that its first occurrence, d tokens "
        "earlier, buys. The baselines' row is the Q1 gate:",
        "",
        markdown_table(copy_rows(records)),
        "",
        "Generation: seeded samples continuing the first tokens of long test documents, scored against what really "
        "followed (a degenerate sample repeats itself: distinct-2 below 0.5):",
        "",
        markdown_table(generation_rows(records)),
        "",
    ]
    for question, answer in research_answers(records, meta):
        lines += [f"**{question}** {answer}", ""]
    lines += [f"_{method_note(meta)}_", "", f"_{scale_note(meta)}_", ""]
    return "\n".join(lines)


__all__ = [
    "copy_rows",
    "headline_markdown",
    "gap_cell",
    "largest_t_speedups",
    "method_note",
    "position_rows",
    "generation_rows",
    "markdown_table",
    "pareto",
    "q3",
    "research_answers",
    "results_rows",
    "scale_note",
    "summary_markdown",
]
