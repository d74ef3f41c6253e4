"""Tables generated from ``metrics/summary.json``: one formatter for every "value [lo, hi]" cell, and the rows of the
results, position, copy and generation tables (lmask.answers writes the sentences).

Every comparative word comes from a Holm-corrected test within its family (``lmask.stats.verdict``); every interval
cell shows its 80 %-power minimum detectable effect beside it. Nothing here hard-codes a schedule's name or shape.
"""

from __future__ import annotations

from typing import Any

from lmask.stats import TOO_FEW
from lmask.summary import BASELINE

Records = dict[str, dict[str, Any]]


def interval(value: float, ci: list[float] | None, digits: int = 2, unit: str = "", why: str | None = None) -> str:
    """``+v<unit> [lo, hi]``, or ``+v<unit> [why]`` where there is no interval (the one formatter of every cell)."""
    if ci is None:
        return f"{value:+.{digits}f}{unit} [{why or TOO_FEW}]"
    return f"{value:+.{digits}f}{unit} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def pct(value: float, ci: list[float] | None, why: str | None = None) -> str:
    return interval(value, ci, 2, "%", why)


def _mde(rec: dict[str, Any], digits: int, unit: str = "") -> str:
    return "" if rec.get("mde80") is None else f"; mde80 {rec['mde80']:.{digits}f}{unit}"


def gap_cell(g: dict[str, Any]) -> str:
    """A perplexity comparison: estimate, interval, per-baseline estimates, mde80, and its word."""
    runs = ", ".join(f"{x:+.2f}" for x in g["pct_baselines"])
    return f"{pct(g['pct'], g['pct_ci95'], g.get('no_interval'))} ({runs}{_mde(g, 2, '%')}): {g['verdict']}"


def nats_cell(e: dict[str, Any], digits: int = 3, word: bool = True) -> str:
    """A difference in nats (copy gain, repeated-text drop): estimate, interval, mde80 and, if tested, its word."""
    value = e["estimate"] if "estimate" in e else e["value"]
    word = f": {e['verdict']}" if word and "verdict" in e else ""
    return f"{interval(value, e['ci95'], digits, '', e.get('no_interval'))}{_mde(e, digits)}{word}".replace(
        "; mde80", " mde80", 1
    )


def points_cell(g: dict[str, Any]) -> str:
    """A difference of two perplexity gaps, in percentage points."""
    runs = ", ".join(f"{x:+.2f}" for x in g["pct_points_baselines"])
    body = interval(g["pct_points"], g["pct_points_ci95"], 2, " pt", g.get("no_interval"))
    return f"{body} ({runs}{_mde(g, 2, ' pt')}): {g['verdict']}"


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


def _ppl(rec: dict[str, Any]) -> str:
    return f"{rec['test_ppl']:.1f} ({', '.join(f'{x:.1f}' for x in rec['test_ppl_baselines'])})"


def results_rows(records: Records) -> list[dict[str, str]]:
    """README's table: quality of every model with intervals and seeds."""
    base = records[BASELINE]
    na = "n/a"
    rows = [
        {
            "model": BASELINE,
            "windows (layer 0..)": "full everywhere",
            "attention pairs": "1.00",
            "test ppl (per baseline)": _ppl(base),
            "vs full control, fine-tuned": na,
            "zero-shot vs baseline": na,
            "code: vs full": na,
            "repeated text: vs full": na,
        }
    ]
    for name in schedules(records):
        r = records[name]
        dom = r.get("domains")
        rows.append(
            {
                "model": name,
                "windows (layer 0..)": windows_text(r),
                "attention pairs": f"{r['attention_pairs']:.2f}",
                "test ppl (per baseline)": _ppl(r),
                "vs full control, fine-tuned": gap_cell(dom["test"]["vs_full"]) if dom else "(the control)",
                "zero-shot vs baseline": gap_cell(r["gaps"]["zero_shot_vs_baseline"]),
                "code: vs full": gap_cell(dom["code"]["vs_full"]) if dom else "(the control)",
                "repeated text: vs full": gap_cell(dom["repeated"]["vs_full"]) if dom else "(the control)",
            }
        )
    return rows


def position_rows(records: Records) -> list[dict[str, str]]:
    """Fine-tuned vs the full control by query position: where the windows bind (positions past a layer's window)."""
    rows = []
    for name in windowed(records):
        rows.append({"model": name, **{f"positions {b}": gap_cell(g) for b, g in records[name]["by_position"].items()}})
    return rows


def copy_rows(records: Records) -> list[dict[str, str]]:
    """Q1's instruments, in nats: the baselines' copy gain per distance (the gate) and repeated-text drop, then what
    each schedule removes from them, zero-shot (against the baselines) and fine-tuned (against the full control)."""
    base = records[BASELINE]
    gate = {
        d: f"{nats_cell(e, word=False)} ({'passes' if e['verdict'] == 'better' else 'fails'})"
        for d, e in base["copy_loss_drop"].items()
    }
    rows = [
        {
            "model": f"{BASELINE}: gain (gate)",
            **{f"d={d}": cell for d, cell in gate.items()},
            "repeated-text drop": nats_cell(base["copy"]["repeated_drop"]),
        }
    ]
    for name in schedules(records):
        r = records[name]
        if "copy_gain_vs_full" not in r:  # the control: its own (fine-tuned) gain and drop
            rows.append(
                {
                    "model": f"{name} (fine-tuned): gain",
                    **{f"d={d}": nats_cell(e) for d, e in r.get("copy_gain", {}).items()},
                    "repeated-text drop": nats_cell(r["repeated_drop"]) if "repeated_drop" in r else "",
                }
            )
            continue
        for label, key, drop in (
            ("zero-shot - baselines", "copy_gain_zero_shot_vs_baseline", "repeated_drop_zero_shot_vs_baseline"),
            ("fine-tuned - full control", "copy_gain_vs_full", "repeated_drop_vs_full"),
        ):
            rows.append(
                {
                    "model": f"{name}: {label}",
                    **{f"d={d}": nats_cell(e) for d, e in r[key].items()},
                    "repeated-text drop": nats_cell(r[drop]),
                }
            )
    return rows


def contrast_rows(records: Records) -> list[dict[str, str]]:
    """Q4: each domain's fine-tuned gap against the full control minus the test domain's, in percentage points."""
    return [
        {"model": name, **{f"{k} (pt)": points_cell(g) for k, g in records[name]["domain_contrasts"].items()}}
        for name in windowed(records)
    ]


def generation_rows(records: Records) -> list[dict[str, str]]:
    """Seeded samples continuing long test prompts: BLEU with its interval beside the null (an unrelated passage's
    BLEU against the same references), and what makes BLEU readable (distinct-2, share of looping samples)."""
    rows = []
    for name, rec in records.items():
        g = rec["generation"]
        if not g.get("prompts"):
            continue
        rows.append(
            {
                "model": name,
                "prompts": str(g["prompts"]),
                "BLEU (95% CI)": interval(g["bleu"]["value"], g["bleu"]["ci95"]),
                "null BLEU (unrelated passage)": interval(g["bleu_null"]["value"], g["bleu_null"]["ci95"]),
                "beats its null": "yes" if g["beats_null"] else "no",
                "distinct-2": f"{g['distinct_2']:.3f}",
                "degenerate samples": f"{g['degenerate_fraction']:.0%}",
            }
        )
    return rows


def scale_note(meta: dict[str, Any]) -> str:
    docs = ", ".join(f"{d}: {n}" for d, n in meta["documents"].items())
    warmup = meta.get("copy_warmup_tokens", 0)
    mix = (
        f"{meta['mix_fraction']:.0%} of the natural-text steps' rows are periodic "
        f"({'distinct random ids' if meta.get('mix_kind') == 'random' else 'a segment of the row'} repeated)"
    )
    synthetic = f"a copy warm-up of {warmup / 1e6:.2f}M tokens of repeated random ids first, then " if warmup else ""
    if meta.get("copy_rows"):
        rows, length = meta["copy_rows"], meta["copy_context"]
        mix += f", with {rows} short rows of repeated random ids ({length} tokens) beside each step"
    if meta.get("random_id_tokens"):
        share = meta["random_id_tokens"] / meta["train_tokens"]
        mix += f"; random ids are {share:.0%} of a baseline's {meta['train_tokens'] / 1e6:.2f}M training tokens"
    return (
        f"Scale: {meta['n_layer']} layers x {meta['n_embd']} wide, vocabulary {meta['vocab_size']}, context "
        f"{meta['context']}; {meta['n_baselines']} baselines of {meta['train_steps']} steps, each fine-tuned "
        f"{meta['masked_steps']} steps per schedule with {meta['n_seeds']} seed(s). Training mix: {synthetic}{mix}; "
        "the held-out domains are natural text and code only. Training blocks never cross a document boundary. "
        f"Held-out documents scored: {docs}. These are small models trained briefly on a small corpus; effect sizes "
        "need not transfer to GPT-2 small on WikiText-103."
    )


def method_note(meta: dict[str, Any]) -> str:
    return (
        f"Intervals: {meta['confidence']:.0%}, over baselines, fine-tuning seeds and documents: the variance of the "
        "mean from the ANOVA of the crossed design (baseline, seed, document, baseline x document), t with "
        "Satterthwaite's degrees of freedom shrunk toward baselines - 1 (lmask/stats.py); the per-baseline estimates "
        "in brackets, and mde80, the smallest true effect this design detects with 80 % power (about twice the "
        f"half-width). Paired: the same baseline, seed, data order and documents on both sides. Fewer than 10 "
        f"documents give no interval ({TOO_FEW}), nor does one baseline. Words: Holm-corrected within each column "
        '(family), so "better"/"worse" appear only where the corrected test rejects no difference; comparisons of '
        f"identical numbers are no test and stay out of the families. Copy gate: gain above {meta['min_gain']} nats, "
        f"one-sided, Holm across distances, {meta['copy_sequences']} probe sequences scored by every model."
    )


__all__ = [
    "contrast_rows",
    "copy_rows",
    "gap_cell",
    "generation_rows",
    "interval",
    "markdown_table",
    "method_note",
    "nats_cell",
    "pct",
    "points_cell",
    "position_rows",
    "results_rows",
    "scale_note",
    "windowed",
    "windows_text",
]
