"""The research answers and the generated markdown: README's headline block and metrics/summary.md.

Every sentence is built from the records (lmask.summary), and every comparative word comes from a Holm-corrected test
(lmask.stats): "better"/"worse" only where it rejects "no difference", which implies the interval shown excludes zero.
Q3 also reads the benchmark files, so only the report stage, which has them, gives its answer.
"""

from __future__ import annotations

from typing import Any

from lmask.summary import BASELINE, DOMAIN_ROLE, EVAL_DOMAINS
from lmask.tables import (
    Records,
    contrast_rows,
    copy_rows,
    gap_cell,
    generation_rows,
    markdown_table,
    method_note,
    nats_cell,
    pct,
    points_cell,
    position_rows,
    results_rows,
    scale_note,
    windowed,
    windows_text,
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
    """Q1's first sentence: whether the baselines use distant context at all (the positive control)."""
    base = records[BASELINE]
    reach = base.get("copy_range")
    gate = base["copy_loss_drop"]
    drop = base["copy"]["repeated_drop"]
    by_source = "; ".join(
        f"{label}: {nats_cell(e, word=False)}" for label, e in base["copy"]["repeated_drop_by_source"].items()
    )
    repeated = (
        f"their repeated-text drop (second half of a document against its first) is {nats_cell(drop)} nats (by the "
        f"first occurrence's position, {by_source}: where copying reaches)"
    )
    if reach is None:
        best = max(gate, key=lambda d: gate[d]["value"])
        return (
            f"The baselines' copy gain passes the gate at no probed distance ({', '.join(gate)} tokens; largest "
            f"{nats_cell(gate[best], word=False)} nats at d = {best}: no gain above the gate's threshold) and "
            f"{repeated}: this run shows no use of distant context, so Q1 is not testable here."
        )
    return (
        f"The baselines use distant context: their copy gain passes the gate up to d = {reach} tokens "
        f"({nats_cell(gate[str(reach)], word=False)} nats) and {repeated}, so a window shorter than that can remove "
        "something."
    )


def compared(word: str, reference: str) -> str:
    """ "better than X" / "worse than X" / "no clear difference from X" (or why there is no word)."""
    if word in ("better", "worse"):
        return f"{word} than {reference}"
    return f"no clear difference from {reference}" if word == "no clear difference" else f"no word ({word})"


def _removed(rec: dict[str, Any], key: str, drop_key: str) -> str:
    """What a schedule removes from the copy instruments: the farthest distances' gain differences and the drop's."""
    far = list(rec[key].items())[-2:]
    gains = ", ".join(f"d = {d} {nats_cell(e)}" for d, e in far)
    return f"copy gain {gains}; repeated-text drop {nats_cell(rec[drop_key])}"


def q1(records: Records) -> str:
    reach = records[BASELINE].get("copy_range")
    parts = [q1_gate(records)]
    if reach is None:
        parts.append(
            "Windows cannot remove long-range use the model does not have; the gaps below measure what windows "
            "cost these models' short-range prediction."
        )
    for name in windowed(records):
        r = records[name]
        far_label, far = list(r["by_position"].items())[-1]
        parts.append(
            f"{name} {windows_text(r)}, receptive field {r['receptive_field']}: zero-shot against the baselines, "
            f"{_removed(r, 'copy_gain_zero_shot_vs_baseline', 'repeated_drop_zero_shot_vs_baseline')}; fine-tuned "
            f"against the full control, {_removed(r, 'copy_gain_vs_full', 'repeated_drop_vs_full')}; test perplexity "
            f"{compared(r['vs_full'], 'the full control')} ({gap_cell(r['gaps']['vs_full'])}), at query positions "
            f"{far_label} {gap_cell(far)}."
        )
    return " ".join(parts)


def q2(records: Records) -> str:
    parts = []
    done = set()
    for name in windowed(records):
        for other, g in records[name].get("vs_equal_pairs", {}).items():
            if (other, name) in done:
                continue
            done.add((name, other))
            verdict = (
                f"{name} is {g['verdict']} than {other}"
                if g["verdict"] in ("better", "worse")
                else f"no clear difference between {name} and {other}"
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
        if name in ("kernel", "train"):
            continue
        fwd = [r for r in f["records"] if r["mode"] == "fwd"]
        if fwd:
            out[name] = max(fwd, key=lambda r: r["seq_len"])
    return out


def q3(records: Records, benchmark: dict[str, dict]) -> str:
    """Efficiency vs quality: cost in pairs and measured speed beside each gap; who is on the Pareto front.
    ``benchmark``: the benchmark files by stem (each schedule's, ``kernel`` and ``train``)."""
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
        r = records[name]
        cells = [f"{d} {gap_cell(r['domains'][d]['vs_full'])}" for d in EVAL_DOMAINS]
        contrasts = [f"{k} {points_cell(g)}" for k, g in r["domain_contrasts"].items()]
        parts.append(
            f"{name} vs full: "
            + ", ".join(cells)
            + ". Against test (the contrast Q4 asks about): "
            + ", ".join(contrasts)
            + "."
        )
    return " ".join(parts)


def headline_markdown(records: Records, meta: dict[str, Any], source: str) -> str:
    """README's short results block: each windowed schedule against the full control and zero-shot, and Q1's
    instruments. ``source``: the summary file ``records`` came from (named in the block's marker comment)."""
    rows = [
        {
            "schedule": name,
            "windows (layer 0..)": windows_text(records[name]),
            "attention pairs": f"{records[name]['attention_pairs']:.2f}",
            "fine-tuned vs full control": gap_cell(records[name]["gaps"]["vs_full"]),
            "zero-shot vs baselines": gap_cell(records[name]["gaps"]["zero_shot_vs_baseline"]),
            "repeated-text drop, fine-tuned - full (nats)": nats_cell(records[name]["repeated_drop_vs_full"]),
        }
        for name in windowed(records)
    ]
    base = records[BASELINE]
    return "\n".join(
        [
            f"<!-- generated by `python -m tools.readme` from {source}; do not edit -->",
            "",
            f"Test perplexity change (negative = better): estimate [95% interval over {meta['n_baselines']} baselines, "
            f"{meta['n_seeds']} fine-tuning seed(s) each and {base['test_documents']['test']} test articles] (one "
            f"estimate per baseline; mde80): Holm-corrected word. Baselines: test ppl "
            f"{base['test_ppl']:.1f} ({', '.join(f'{x:.1f}' for x in base['test_ppl_baselines'])}), unigram floor "
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
        "<!-- generated by `dvc repro summarize` (lmask/answers.py) from metrics/summary.json; do not edit -->",
        "",
        "Perplexity change in % (negative = better) against the full-attention control fine-tuned the same way, and "
        "zero-shot (a baseline's weights under the schedule's windows, no training) against the baselines. Each cell: "
        "estimate [95% interval] (one estimate per baseline; mde80): word.",
        "",
        markdown_table(results_rows(records)),
        "",
        "Fine-tuned vs the full control by query position (test documents): a window of w binds at positions w and "
        "beyond.",
        "",
        markdown_table(position_rows(records)),
        "",
        "Q1's instruments in nats: the copy gain (the loss drop on a natural span's second occurrence that its first, "
        "d tokens earlier, buys) and the repeated-text drop (a document's repeated half against its first half). "
        "The baselines' rows are the positive control; the schedules' rows are what their windows remove (negative = "
        "less copying):",
        "",
        markdown_table(copy_rows(records)),
        "",
        "Q4: each domain's gap against the full control minus the test domain's, in percentage points:",
        "",
        markdown_table(contrast_rows(records)),
        "",
        "Generation: seeded samples continuing the first tokens of long test documents, scored against what really "
        "followed, beside the null (an unrelated passage scored against the same references); no word is drawn from "
        "a BLEU that does not beat its null:",
        "",
        markdown_table(generation_rows(records)),
        "",
    ]
    for question, answer in research_answers(records, meta):
        lines += [f"**{question}** {answer}", ""]
    lines += [f"_{method_note(meta)}_", "", f"_{scale_note(meta)}_", ""]
    return "\n".join(lines)


__all__ = [
    "Q3",
    "Q3_ELSEWHERE",
    "compared",
    "headline_markdown",
    "largest_t_speedups",
    "pareto",
    "q1",
    "q1_gate",
    "q2",
    "q3",
    "q4",
    "research_answers",
    "summary_markdown",
]
