"""Generation from held-out prompts long enough that the windows bind: seeded sampling, BLEU and distinct-n.

Each prompt is the first ``prompt_tokens`` (960 by default) of a test document long enough to have ``new_tokens``
more; the reference is what really followed. Greedy decoding is not scored: at this model size it loops ("the the
the"), and BLEU between loops and a reference measures nothing. Sampling uses the same seed for every model, so the
comparison is paired prompt by prompt. The texts are saved so people can read them.
"""

from __future__ import annotations

import numpy as np
import sacrebleu
import torch

from lmask.kv_cache import windowed_cache
from lmask.params import GenerationParams

DEGENERATE_DISTINCT2 = 0.5  # an output whose bigrams are less than half distinct is flagged as degenerate


def prompts_from_documents(
    docs: np.ndarray, lengths: np.ndarray, cfg: GenerationParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompts [n, prompt_tokens], references [n, new_tokens], nulls [n, new_tokens]) from the first
    ``cfg.n_prompts`` documents long enough for a prompt and its reference. A prompt's null is the next chosen
    document's text at the same place: real text from the same domain that did not follow this prompt, so its BLEU
    against the reference is what a model scores without using the prompt at all."""
    idx = np.flatnonzero(lengths >= cfg.prompt_tokens + cfg.new_tokens)[: cfg.n_prompts]
    cont = docs[idx][:, cfg.prompt_tokens : cfg.prompt_tokens + cfg.new_tokens]
    return docs[idx][:, : cfg.prompt_tokens], cont, np.roll(cont, -1, axis=0)


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    prompts: np.ndarray,
    new_tokens: int,
    greedy: bool,
    seed: int,
    temperature: float = 1.0,
    top_k: int = 50,
) -> np.ndarray:
    """New token ids [n, new_tokens] continuing each prompt.

    Uses lmask.kv_cache's windowed cache: windowed layers keep only their sinks and last window - 1 keys, as a
    deployment would (greedy output equals a full cache's under the same masks).
    """
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(prompts).to(device)
    torch.manual_seed(seed)  # sampling draws from torch's global generator
    sample_args = {} if greedy else {"temperature": temperature, "top_k": top_k}
    out = model.generate(
        x,
        attention_mask=torch.ones_like(x),
        past_key_values=windowed_cache(model),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # equal lengths: BLEU and distinct-n compare like with like
        do_sample=not greedy,
        pad_token_id=model.config.eos_token_id,
        **sample_args,
    )
    return out[:, x.shape[1] :].cpu().numpy()


def distinct_n(sequences: list[list], n: int) -> float:
    """Unique n-grams over all n-grams across the sequences (1.0 = no repetition); 0.0 when there are none."""
    grams = [tuple(seq[i : i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults, 13a tokenization) of hypotheses against one reference each."""
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def generation_report(
    model: torch.nn.Module,
    tokenizer,
    prompts: np.ndarray,
    references: np.ndarray,
    nulls: np.ndarray,
    cfg: GenerationParams,
    seed: int,
) -> tuple[dict, dict]:
    """(metrics, texts) for one model's seeded samples continuing the prompts.

    BLEU (sacrebleu) is computed per prompt, so the report can put an interval over prompts on it, beside the BLEU
    of each prompt's null passage against the same reference. Each sample's distinct-2 is kept and samples below
    ``DEGENERATE_DISTINCT2`` are counted, so loops are visible, not scored silently.
    """
    if not len(prompts):
        empty = np.zeros(0)
        return {
            "bleu": None,
            "distinct_2": None,
            "degenerate_fraction": None,
            "per_prompt_bleu": empty,
            "per_prompt_bleu_null": empty,
            "per_prompt_distinct2": empty,
        }, {"references": [], "sampled": [], "degenerate": []}
    sampled = generate_ids(model, prompts, cfg.new_tokens, False, seed, cfg.temperature, cfg.top_k)
    ref_text = [tokenizer.decode(r) for r in references]
    sampled_text = [tokenizer.decode(g) for g in sampled]
    per_prompt_distinct2 = np.array([distinct_n([g], 2) for g in sampled.tolist()])
    per_prompt_bleu = np.array([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(sampled_text, ref_text)])
    null_text = [tokenizer.decode(n) for n in nulls]
    per_prompt_bleu_null = np.array([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(null_text, ref_text)])
    metrics = {
        "bleu": round(bleu(sampled_text, ref_text), 3),
        "distinct_2": round(distinct_n(sampled.tolist(), 2), 4),
        "degenerate_fraction": round(float((per_prompt_distinct2 < DEGENERATE_DISTINCT2).mean()), 4),
        "bleu_null": round(bleu(null_text, ref_text), 3),
        "per_prompt_bleu": per_prompt_bleu,
        "per_prompt_bleu_null": per_prompt_bleu_null,
        "per_prompt_distinct2": per_prompt_distinct2,
    }
    texts = {
        "references": ref_text,
        "sampled": sampled_text,
        "degenerate": (per_prompt_distinct2 < DEGENERATE_DISTINCT2).tolist(),
    }
    return metrics, texts
