"""Stage benchmark@<schedule> / benchmark_kernel: speed against full attention, beside the FLOP ceiling."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--schedule", default=None, help="schedule to time against full; omit for the one-layer kernel")
    p.add_argument("--train", action="store_true", help="time the training step instead (benchmark_train)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    params = cli.params(args)
    if args.train:
        from lmask import train_bench

        print(train_bench.run_stage(params, args.out)["summary"])
        return
    schedule = params.schedule(args.schedule) if args.schedule else None
    if schedule is not None and schedule.is_full:
        from lmask.io import write_json  # nothing to time: no torch import

        note = f"{schedule.name} is full attention in every layer"
        write_json(args.out, {"summary": {}, "run": {"note": note}, "records": []}, indent=1)
        print(note)
        return
    from lmask import benchmark

    if schedule is None:
        benchmark.run_kernel(params.benchmark, args.out)
    else:
        m = params.model
        vocab = params.tokenizer.vocab_size if params.tokenizer.kind == "bpe" else 50257  # gpt2: GPT-2's BPE
        dims = {"n_embd": m.n_embd, "n_head": m.n_head, "vocab_size": vocab, "seq_len": params.data.context_length}
        benchmark.run_schedule(params.benchmark, schedule, args.out, dims)  # depth: the schedule's model.n_layer


if __name__ == "__main__":
    cli.run(main)
