"""Words and tables generated from ``metrics/summary.json``: README's results block and the research answers.

Every sentence is built from the records (lmask.summary), and every comparative word comes from an interval
(``lmask.stats.verdict``: "better" / "worse" only when the 95 % interval excludes zero). Nothing here hard-codes a
schedule's name or shape: windows, sinks and pairs are read from each record.
"""

from __future__ import annotations

from typing import Any

from lmask.summary import BASELINE, DOMAIN_ROLE, DOMAINS

Records = dict[str, dict[str, Any]]


FAINT_COPY_NATS = 0.1  # a copy gain below this is a faint use of context (outright copying gains several nats)


def pct(value: float, ci: list[float]) -> str:
    return f"{value:+.2f}% [{ci[0]:+.2f}, {ci[1]:+.2f}]"


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
            "test ppl": f"{base['test_ppl']:.1f}",
            "vs full control, fine-tuned (95% CI)": "n/a",
            "seeds: vs full": "n/a",
            "zero-shot vs baseline (95% CI)": "n/a",
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
                "test ppl": f"{r['test_ppl']:.1f}",
                "vs full control, fine-tuned (95% CI)": pct(r["vs_full_pct"], r["vs_full_pct_ci95"])
                if has_full
                else "(the control)",
                "seeds: vs full": ", ".join(f"{x:+.2f}%" for x in r["vs_full_pct_seeds"]) if has_full else "n/a",
                "zero-shot vs baseline (95% CI)": pct(
                    r["zero_shot_vs_baseline_pct"], r["zero_shot_vs_baseline_pct_ci95"]
                ),
                "code: vs full": _domain(r, "code"),
                "repeated text: vs full": _domain(r, "repeated"),
            }
        )
    return rows


def _domain(rec: dict[str, Any], domain: str) -> str:
    if "domains" not in rec:
        return "(the control)"
    g = rec["domains"][domain]["vs_full"]
    return pct(g["pct"], g["pct_ci95"])


def copy_rows(records: Records) -> list[dict[str, str]]:
    """Copy gain (nats) per probe distance: the baseline, then each schedule zero-shot and fine-tuned."""
    base = records[BASELINE]["copy_loss_drop"]
    rows = [{"model": BASELINE, **{f"d={d}": _nats(e) for d, e in base.items()}}]
    for name in schedules(records):
        for variant in ("zero_shot", "finetuned"):
            gains = records[name]["copy_gain"][variant]
            rows.append(
                {"model": f"{name} ({variant.replace('_', '-')})", **{f"d={d}": _nats(e) for d, e in gains.items()}}
            )
    return rows


def generation_rows(records: Records) -> list[dict[str, str]]:
    """Greedy continuations of the test prompts: BLEU with its CI over prompts, and what makes BLEU readable."""
    rows = []
    for name, rec in records.items():
        g = rec["generation"]
        lo, hi = g["bleu"]["ci95"]
        rows.append(
            {
                "model": name,
                "BLEU (95% CI over prompts)": f"{g['bleu']['value']:.2f} [{lo:.2f}, {hi:.2f}]",
                "NLL of the true continuation": f"{g['continuation_nll']:.3f}",
                "distinct-2 (greedy)": f"{g['distinct_2']:.3f}",
                "degenerate outputs": f"{g['degenerate_fraction']:.0%}",
            }
        )
    return rows


def _nats(e: dict[str, Any]) -> str:
    return f"{e['value']:+.4f} [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]"


def scale_note(meta: dict[str, Any]) -> str:
    return (
        f"Scale: {meta['n_layer']} layers x {meta['n_embd']} wide, vocabulary {meta['vocab_size']}, context "
        f"{meta['context']}, {meta['train_steps']} baseline steps + {meta['masked_steps']} fine-tuning steps per "
        f"schedule and seed ({meta['n_seeds']} seeds), periodic text (a segment of the row repeated) in "
        f"{meta['mix_fraction']:.0%} of training rows. These are small models trained briefly on a small corpus; "
        "effect sizes need not transfer to GPT-2 small on WikiText-103."
    )


def research_answers(records: Records, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The seed's questions (Q2's speed part and Q3 live in the report, which also reads the benchmark)."""
    return [
        ("Q1. Can deeper layers work with restricted attention windows?", q1(records)),
        ("Q2. Which progression works best, at equal attention pairs?", q2(records)),
        ("Q4. Which text is most amenable to windows?", q4(records)),
    ]


def q1(records: Records) -> str:
    base = records[BASELINE]
    reach = base.get("copy_range")
    distances = [int(d) for d in base["copy_loss_drop"]]
    if reach is None:
        head = (
            f"The baseline uses no context beyond {min(distances)} tokens that the copy probe can detect: its copy "
            f"gain is not above 0 (95% CI) at any probed distance ({', '.join(map(str, distances))} tokens), so Q1 "
            "is not testable here. Windows cannot remove long-range use the model does not have; the gaps below "
            "measure only what windows cost this model on its (short-range) predictions."
        )
    else:
        nearest = min(distances)
        faint = base["copy_loss_drop"][str(reach)]["value"] < FAINT_COPY_NATS
        head = (
            f"The baseline uses distant context{', faintly' if faint else ''}: its copy gain is above 0 (95% CI) up "
            f"to d = {reach} tokens ({_nats(base['copy_loss_drop'][str(reach)])} nats, against "
            f"{_nats(base['copy_loss_drop'][str(nearest)])} at d = {nearest}), so a window shorter than that can "
            "remove something" + ("; a model that copied outright would show several nats." if faint else ".")
        )
    parts = [head]
    for name in windowed(records):
        r = records[name]
        seeds = ", ".join(f"{x:+.2f}%" for x in r["vs_full_pct_seeds"])
        parts.append(
            f"{name} {windows_text(r)}: fine-tuned, {compared(r['vs_full'], 'the full control')} "
            f"({pct(r['vs_full_pct'], r['vs_full_pct_ci95'])}; seeds {seeds}); zero-shot, "
            f"{compared(r['zero_shot_vs_baseline'], 'the baseline')} "
            f"({pct(r['zero_shot_vs_baseline_pct'], r['zero_shot_vs_baseline_pct_ci95'])})." + _copy_loss(r, reach)
        )
    return " ".join(parts)


def compared(word: str, reference: str) -> str:
    """ "better than X" / "worse than X" / "no clear difference from X"."""
    return f"no clear difference from {reference}" if word == "no clear difference" else f"{word} than {reference}"


def _copy_loss(rec: dict[str, Any], reach: int | None) -> str:
    if reach is None:
        return ""
    e = rec["copy_gain"]["zero_shot"][str(reach)]
    kept = e["ci95"][0] > 0
    what = "still above 0" if kept else "not above 0"
    return f" At d = {reach} its zero-shot copy gain is {_nats(e)} nats: {what}."


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
                f"{records[other]['attention_pairs']:.2f}): {verdict} ({pct(g['pct'], g['pct_ci95'])})."
            )
    if not parts:
        return "No two schedules have equal attention pairs (within 0.02), so progressions are not compared here."
    return "Fine-tuned, paired on the same test chunks: " + " ".join(parts)


def q4(records: Records) -> str:
    parts = [f"Domains: {'; '.join(f'{d}: {DOMAIN_ROLE[d]}' for d in DOMAINS)}."]
    for name in windowed(records):
        dom = records[name]["domains"]
        cells = [
            f"{d} {dom[d]['vs_full']['verdict']} ({pct(dom[d]['vs_full']['pct'], dom[d]['vs_full']['pct_ci95'])})"
            for d in DOMAINS
        ]
        parts.append(f"{name} vs full: " + ", ".join(cells) + ".")
    return " ".join(parts)


def summary_markdown(records: Records, meta: dict[str, Any]) -> str:
    """metrics/summary.md: README's results block."""
    lines = [
        "<!-- generated by `dvc repro summarize` (lmask/tables.py) from metrics/summary.json; do not edit -->",
        "",
        "Perplexity change in % (negative = better), 95% paired bootstrap intervals over test chunks, fine-tuning "
        "seeds averaged per chunk; the per-seed point estimates beside them. Zero-shot: the baseline's weights under "
        "the schedule's windows, no training.",
        "",
        markdown_table(results_rows(records)),
        "",
        "Copy gain in nats (loss drop on a random span's second occurrence that its first occurrence, d tokens "
        "earlier, buys; 95% CI over probe sequences):",
        "",
        markdown_table(copy_rows(records)),
        "",
        "Generation (greedy continuations of test prompts; fine-tuned seeds averaged). A degenerate output repeats "
        "itself (distinct-2 below 0.5, lmask/generation.py); BLEU on such text says little, so the true "
        "continuation's NLL is beside it:",
        "",
        markdown_table(generation_rows(records)),
        "",
    ]
    for question, answer in research_answers(records, meta):
        lines += [f"**{question}** {answer}", ""]
    lines += [f"_{scale_note(meta)}_", ""]
    return "\n".join(lines)


__all__ = [
    "copy_rows",
    "generation_rows",
    "markdown_table",
    "research_answers",
    "results_rows",
    "scale_note",
    "summary_markdown",
]
