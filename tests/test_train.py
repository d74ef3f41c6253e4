"""Training loop, single process: exact resume, corrupt checkpoints survived, non-finite loss stops the run, the same
bits with or without a competing CPU load.

Runs lmask.train in-process on the tiny preset (data prepared in-process, no DVC), so each run takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

import lmask.train
from lmask.data import download, tokenize_project
from lmask.device import Distributed
from lmask.params import Params, load_params
from lmask.train import train_baseline
from tests.conftest import copy_project, env
from tools.preset import apply_preset

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("models", "metrics", "checkpoints")
TRAIN_ARGS = ("data/tokenized", "data/tokenizer", "models/baseline", "metrics/train/baseline", "checkpoints/baseline")


def shrink_validation(tokenized: Path, blocks: int = 32) -> None:
    path = tokenized / "validation.npy"
    np.save(path, np.load(path)[:blocks])


def prepare(root: Path, **train) -> Params:
    """params.yaml with the tiny preset (plus ``train`` overrides), and data/ prepared in-process."""
    apply_preset("tiny", root / "params.yaml")
    if train:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        raw["train"].update(train)
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(root / "params.yaml")
    download(params.data, root / "data/raw")
    tokenize_project(params, root / "data/raw", root / "data/tokenizer", root / "data/tokenized")
    shrink_validation(root / "data/tokenized")
    return params


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    shutil.copy2(ROOT / "params.yaml", root / "params.yaml")
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")  # the stage's declared inputs: what a checkpoint must match
    shutil.copytree(ROOT / "presets", root / "presets")
    prepare(root, steps=8, checkpoint_every=2, eval_every=2)
    return root


@pytest.fixture
def workdir(tiny_data, tmp_path, monkeypatch) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_data, dest)
    monkeypatch.chdir(dest)
    return dest


def train(params: Params, stop_after: int | None = None) -> dict:
    return train_baseline(params, 0, *(Path(p) for p in TRAIN_ARGS), stop_after=stop_after)


def clean_outputs() -> None:
    for d in OUTPUTS:
        shutil.rmtree(d, ignore_errors=True)


def folder_bytes(folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def weights(folder: str = "models/baseline") -> dict[str, torch.Tensor]:
    return load_file(f"{folder}/model.safetensors")


def curve() -> str:
    return Path("metrics/train/baseline/plots/metrics/val_loss.tsv").read_text()


def with_train(params: Params, **changes) -> Params:
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **changes))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def test_interrupted_run_resumes_to_identical_weights(workdir):
    params = load_params()
    assert params.train.steps == 8 and params.train.checkpoint_every == 2
    full = train(params)
    ref_weights, ref_curve, ref_folder = weights(), curve(), folder_bytes("models/baseline")
    clean_outputs()

    # Stop twice, at steps that are not checkpoint_every multiples: stop_after must still leave a checkpoint.
    assert train(params, stop_after=3) == {"stopped_at": 3}
    assert Path("checkpoints/baseline/state.pt").is_file() and not Path("models/baseline").exists()
    assert train(params, stop_after=5) == {"stopped_at": 5}
    resumed = train(params)

    assert_same_weights(ref_weights, weights())
    assert curve() == ref_curve
    assert resumed["val_loss"] == full["val_loss"] and resumed["train_loss"] == full["train_loss"]
    assert not Path("checkpoints/baseline").exists(), "a finished run removes its checkpoints"
    assert folder_bytes("models/baseline") == ref_folder, "the model folder holds only what the weights determine"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_moved_aside_and_the_previous_one_resumes(workdir, damage):
    params = load_params()
    train(params)
    ref_weights = weights()
    clean_outputs()
    train(params, stop_after=4)  # checkpoints at steps 2 (state.prev.pt) and 4 (state.pt)
    newest = Path("checkpoints/baseline/state.pt")
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.warns(
        UserWarning, match=r"checkpoints/baseline/state\.pt is unreadable .* moved to .*state\.pt\.corrupt"
    ):
        train(params)
    assert_same_weights(ref_weights, weights())  # resumed from step 2: the same weights as an uninterrupted run


def test_both_checkpoints_corrupt_restarts_from_scratch(workdir):
    params = load_params()
    train(params)
    ref_weights = weights()
    clean_outputs()
    train(params, stop_after=4)
    for name in ("state.pt", "state.prev.pt"):
        (Path("checkpoints/baseline") / name).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        train(params)
    assert_same_weights(ref_weights, weights())


def test_stale_checkpoint_is_ignored(workdir, capsys):
    params = load_params()
    train(params, stop_after=2)
    changed = with_train(params, lr=params.train.lr / 2)
    changed.raw["train"]["lr"] = changed.train.lr  # what dvc.yaml's params entry for the stage reads
    train(changed)
    assert "was made from other inputs (params:train changed); starting from step 0" in capsys.readouterr().out
    after_stale = weights()
    clean_outputs()
    train(changed)  # a fresh run with the new params is the reference
    assert_same_weights(after_stale, weights())


def test_non_finite_loss_stops_with_a_clear_error(workdir, monkeypatch):
    make = lmask.train.initial_model

    def poisoned(params, tokenizer, seed):
        model = make(params, tokenizer, seed)
        with torch.no_grad():
            model.transformer.ln_f.weight[0] = float("nan")
        return model

    monkeypatch.setattr(lmask.train, "initial_model", poisoned)
    with pytest.raises(
        FloatingPointError, match=r"training loss became nan at step 0 \(lr 0\.001\); lower the learning rate"
    ):
        train(load_params())
    assert not Path("models/baseline").exists() and not Path("metrics/train/baseline").exists()
    assert not Path("checkpoints/baseline").exists(), "a diverged run's checkpoint cannot resume: it is removed"


def test_huge_learning_rate_diverges_with_a_clear_error(workdir):
    params = with_train(load_params(), lr=1e30, min_lr=0.0, warmup_steps=0, grad_clip=1e30)
    with pytest.raises(FloatingPointError, match=r"lr=1e\+30"):
        train(params)
    assert not Path("models/baseline").exists()


def test_world_larger_than_the_batch_allows_is_rejected(workdir, monkeypatch):
    """params check nproc; a bigger torchrun world (multi-node: nnodes × nproc) is refused before training."""
    params = load_params()  # tiny: batch 4 = micro 4 × 1 process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"not divisible by micro_batch_size 4 × 2 processes"):
        train(params)


def test_mixed_batches_are_a_function_of_seed_and_step():
    from lmask.params import MixParams
    from lmask.synthetic import mix_batch

    blocks = np.random.default_rng(0).integers(1, 1000, size=(64, 32))
    mix = MixParams(fraction=0.5, kind="natural", min_period=4, max_period=8)
    (a, periods), (b, _) = mix_batch(blocks, mix, 1, 7, 1000), mix_batch(blocks, mix, 1, 7, 1000)
    assert np.array_equal(a, b) and not np.array_equal(a, mix_batch(blocks, mix, 1, 8, 1000)[0])
    changed = [i for i in range(len(a)) if not np.array_equal(a[i], blocks[i])]
    assert 16 <= len(changed) <= 48  # about half the rows
    assert changed == list(np.flatnonzero(periods))
    for i in changed:  # each is a segment of that row's own text, repeated with its recorded period
        p = periods[i]
        assert 4 <= p <= 8 and np.array_equal(a[i][p:], a[i][:-p])
        assert any(np.array_equal(blocks[i][s : s + p], a[i][:p]) for s in range(32 - p + 1))
    unchanged, none = mix_batch(blocks, MixParams(fraction=0.0), 1, 7, 1000)
    assert np.array_equal(unchanged, blocks) and not none.any()


def test_random_periodic_rows_repeat_distinct_ids_with_their_period():
    """kind random: only copying predicts them: distinct ids (never 0, the end-of-text id), repeated exactly."""
    from lmask.params import MixParams
    from lmask.synthetic import copy_rows, mix_batch

    blocks = np.zeros((200, 48), dtype=np.int64)
    out, periods = mix_batch(blocks, MixParams(fraction=1.0, kind="random", min_period=5, max_period=20), 3, 0, 50)
    assert set(np.unique(periods)) <= set(range(5, 21)) and len(np.unique(periods)) > 5
    rows, row_periods = copy_rows(30, 40, 2, 9, 50, seed=3, step=11)
    assert rows.shape == (30, 40) and np.array_equal(rows, copy_rows(30, 40, 2, 9, 50, seed=3, step=11)[0])
    for x, p in [*zip(out, periods), *zip(rows, row_periods)]:
        segment = x[:p]
        assert len(set(segment.tolist())) == p and 0 not in segment
        assert np.array_equal(x, np.resize(segment, len(x)))


def test_prefixed_copy_rows_move_the_first_occurrence_through_the_row():
    """prefixed: each row begins with 0 to length - 2P ids seen nowhere else in it, then P distinct ids repeated to
    the end; the copy start is prefix + P. Unprefixed rows are the same draws as before the option existed (written
    out here: periods first, then each row's distinct ids), so the default's models did not change."""
    from lmask.synthetic import copy_rows

    rows, starts = copy_rows(200, 40, 2, 9, 300, seed=3, step=11, prefixed=True)
    prefixes = []
    for x, start in zip(rows, starts, strict=True):
        period = next(p for p in range(2, 10) if np.array_equal(x[start:], x[start - p : -p]) and start - p >= 0)
        prefix = start - period
        assert 0 <= prefix <= 40 - 2 * period and 0 not in x
        assert len(set(x[:start].tolist())) == start  # prefix and first period: all distinct
        assert np.array_equal(x[prefix:], np.resize(x[prefix:start], 40 - prefix))
        prefixes.append(prefix)
    assert min(prefixes) == 0 and max(prefixes) >= 30  # first occurrences spread over the row
    rng = np.random.default_rng([3, 11, 2])
    periods = rng.integers(2, 10, size=30)
    reference = [np.resize(rng.choice(np.arange(1, 300), size=p, replace=False), 40) for p in periods]
    plain, plain_starts = copy_rows(30, 40, 2, 9, 300, seed=3, step=11)
    assert np.array_equal(plain, np.stack(reference)) and np.array_equal(plain_starts, periods)


def test_a_prefix_share_prefixes_the_first_rows_of_each_step():
    """prefixed = 0.5: the first half of the rows (rounded half up) are prefixed, the rest are not; the draws follow
    the documented order (periods, then per row its prefix length if prefixed and its distinct ids), written out here
    as a reference; true and 1.0 are the same draws, as are false and 0."""
    from lmask.synthetic import copy_rows

    L, V, seed, step = 40, 300, 5, 9
    for n, k in ((6, 3), (5, 3), (2, 1), (1, 1)):
        rng = np.random.default_rng([seed, step, 2])
        periods = rng.integers(2, 10, size=n)
        reference, reference_starts = [], []
        for row, p in enumerate(periods):
            prefix = int(rng.integers(0, L - 2 * p + 1)) if row < k else 0
            ids = rng.choice(np.arange(1, V), size=prefix + p, replace=False)
            reference.append(np.concatenate([ids[:prefix], np.resize(ids[prefix:], L - prefix)]))
            reference_starts.append(prefix + p)
        rows, starts = copy_rows(n, L, 2, 9, V, seed, step, prefixed=0.5)
        assert np.array_equal(rows, np.stack(reference)) and starts.tolist() == reference_starts
        assert np.array_equal(starts[k:], periods[k:])  # the unprefixed rows copy from their first period
    for share, flag in ((1.0, True), (0, False)):
        a, b = copy_rows(16, L, 2, 9, V, seed, step, prefixed=share), copy_rows(16, L, 2, 9, V, seed, step, flag)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_random_periodic_puts_the_first_occurrence_after_its_prefix():
    """prefix = START (tools.copy_onset's --prefix and --reach rows too): START distinct ids, then a P-id segment
    repeated to the row's end; no id twice before the repeats, none 0 (the end-of-text id)."""
    from lmask.synthetic import random_periodic

    rng = np.random.default_rng(0)
    for start, period, length in ((0, 5, 12), (7, 3, 13), (20, 4, 28)):
        row = random_periodic(rng, length, period, 64, prefix=start)
        assert len(row) == length and 0 not in row
        assert len(set(row[: start + period])) == start + period
        assert (row[start + period :] == row[start : length - period]).all()


def test_copy_loss_counts_labels_from_each_rows_copy_start():
    """row_losses' copy part covers exactly the labels at positions >= copy start of periodic rows, and its natural
    part the natural rows: with uniform logits every label costs ln V, so the sums are counts times ln V."""
    V, T = 11, 12
    x = torch.ones(3, T, dtype=torch.long)
    starts = torch.tensor([0, 3, 7])  # natural, copy from position 3, copy from position 7 (a prefixed row)
    total, parts = lmask.train.row_losses(torch.zeros(3, T, V), x, starts)
    ln_v = math.log(V)
    copied = (T - 3) + (T - 7)  # labels are positions 1..T-1
    assert parts[1] == 3 * (T - 1) and parts[3] == T - 1 and parts[5] == copied
    assert math.isclose(float(total), 3 * (T - 1) * ln_v, rel_tol=1e-6)
    assert math.isclose(float(parts[4]), copied * ln_v, rel_tol=1e-6)


def test_prefixed_warmup_phase_and_short_rows_reach_the_batch():
    """A phase's prefix (true, or a share) and mix.copy_prefix give prefixed rows in the step's batch (copy start beyond
    the period for some rows); without them every copy start is the row's period."""
    params = load_params()
    phase = {"context": 64, "steps": 2, "batch_size": 8, "max_period": 6}
    mix = dataclasses.replace(params.mix, fraction=0.0, copy_rows=8, copy_context=64, copy_max_period=6)
    blocks = np.zeros((10, 64), dtype=np.int64)
    for prefix in (False, True, 0.5):
        cw = dataclasses.replace(params.train.copy_warmup, phases=[{**phase, "prefix": prefix}])
        cfg = dataclasses.replace(params.train, copy_warmup=cw)
        warm = lmask.train.step_batch(0, blocks, cfg, mix, 7, 320)
        short = lmask.train.step_batch(5, blocks, cfg, dataclasses.replace(mix, copy_prefix=prefix), 7, 320)
        for starts in (warm.copy_start, short.short_copy_start):
            assert (starts > 6).any() == bool(prefix) and (starts >= 2).all()
            if prefix == 0.5:  # the last 4 of 8 rows are unprefixed: copy start = period <= max_period
                assert (starts[4:] <= 6).all() and (starts[:4] > 6).any()


def test_position_offsets_draw_first_positions_that_fit_and_leave_the_rows_alone():
    """Offsets are uniform in [0, context - length] (both ends reached), a function of (seed, step); a phase's
    position_offsets and mix.copy_position_offsets put them in the step's batch without changing its rows."""
    from lmask.synthetic import position_offsets

    first = position_offsets(4000, 48, 64, seed=3, step=11)
    assert first.min() == 0 and first.max() == 64 - 48 and np.array_equal(first, position_offsets(4000, 48, 64, 3, 11))
    assert not np.array_equal(first, position_offsets(4000, 48, 64, 3, 12))
    params = load_params()
    phase = {"context": 16, "steps": 2, "batch_size": 8, "max_period": 4}
    mix = dataclasses.replace(params.mix, fraction=0.0, copy_rows=8, copy_context=16, copy_max_period=4)
    blocks = np.zeros((10, 64), dtype=np.int64)
    batches = {}
    for shifted in (False, True):
        cw = dataclasses.replace(params.train.copy_warmup, phases=[{**phase, "position_offsets": shifted}])
        cfg = dataclasses.replace(params.train, copy_warmup=cw)
        short_mix = dataclasses.replace(mix, copy_position_offsets=shifted)
        batches[shifted] = (
            lmask.train.step_batch(0, blocks, cfg, mix, 7, 320),
            lmask.train.step_batch(5, blocks, cfg, short_mix, 7, 320),
        )
    (warm, short), (warm_shifted, short_shifted) = batches[False], batches[True]
    assert warm.first_position is None and short.short_first_position is None
    assert np.array_equal(warm.rows, warm_shifted.rows) and np.array_equal(short.short_rows, short_shifted.short_rows)
    assert np.array_equal(warm_shifted.first_position, position_offsets(8, 16, 64, 7, 0))
    assert np.array_equal(short_shifted.short_first_position, position_offsets(8, 16, 64, 7, 5))
    assert short_shifted.first_position is None  # natural rows fill every position already


def test_shifted_rows_reach_the_model_at_their_positions(workdir):
    """With position_offsets the model sees each warm-up row at position ids first + 0 .. first + T - 1 (read at the
    position embedding's input); without, at 0 .. T - 1."""
    params = load_params()
    seen = []
    for offsets in (False, True):
        phase = {"context": 16, "steps": 2, "batch_size": 4, "max_period": 4, "position_offsets": offsets}
        cw = dataclasses.replace(params.train.copy_warmup, phases=[phase])
        cfg = dataclasses.replace(params.train, copy_warmup=cw)
        model = lmask.train.initial_model(params, AutoTokenizer.from_pretrained("data/tokenizer"), 0)
        ids: list[torch.Tensor] = []
        model.transformer.wpe.register_forward_hook(lambda mod, args, out, ids=ids: ids.append(args[0].clone()))
        batch = lmask.train.step_batch(1, np.zeros((10, 64), dtype=np.int64), cfg, params.mix, 7, 320)
        lmask.train.accumulate_gradients(model, batch, 4, Distributed(torch.device("cpu")), torch.device("cpu"))
        seen.append((batch, torch.cat(ids)))
    (_, plain_ids), (shifted, shifted_ids) = seen
    assert torch.equal(plain_ids.expand(4, 16), torch.arange(16).expand(4, 16))  # GPT-2's own ids: [1, T]
    expected = torch.from_numpy(shifted.first_position)[:, None] + torch.arange(16)
    assert torch.equal(shifted_ids, expected) and (shifted.first_position > 0).any()


def test_periodic_and_natural_losses_are_logged_apart(workdir):
    """dvclive gets the loss on natural rows and, apart, on periodic rows after their first period (copying's onset
    shows there), including during a copy warm-up."""
    params = load_params()
    phases = [
        {"context": 16, "steps": 2, "batch_size": 4, "max_period": 4},
        {"context": 32, "steps": 1, "batch_size": 2, "max_period": 8},
    ]
    cw = dataclasses.replace(params.train.copy_warmup, phases=phases)
    assert cw.steps == 3 and cw.phase_at(1).context == 16 and cw.phase_at(2).context == 32 and cw.phase_at(3) is None
    train(with_train(params, copy_warmup=cw))
    plots = Path("metrics/train/baseline/plots/metrics")
    copy = [line.split("\t") for line in (plots / "copy_loss.tsv").read_text().splitlines()[1:]]
    natural = [line.split("\t") for line in (plots / "natural_loss.tsv").read_text().splitlines()[1:]]
    assert int(copy[0][0]) == 2 and {int(r[0]) for r in copy} <= {2, 4, 6, 8}  # warm-up, then mixed rows (if any)
    assert [int(r[0]) for r in natural] == [4, 6, 8]  # none during the warm-up
    uniform = math.log(params.tokenizer.vocab_size)
    assert all(0 < float(r[1]) < 2 * uniform for r in copy + natural)
    metrics = json.loads(Path("metrics/train/baseline/metrics.json").read_text())
    assert metrics["attention_calls"]["tiled"] > 0 and "attention_calls" not in json.loads(
        Path("models/baseline/train_info.json").read_text()
    )


@pytest.mark.slow
def test_same_bits_with_and_without_a_competing_cpu_load(tmp_path):
    """The stage trains twice, once beside two busy (niced) processes; the weights are byte-identical
    (lmask.determinism)."""
    repo = copy_project(tmp_path / "repo")
    prepare(repo, steps=10, checkpoint_every=10, eval_every=5)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["cpu_threads"] = 2  # the default run's setting: two threads, which a busy machine could otherwise shrink
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "stages.train_baseline", "--baseline", "0", "--data", "data/tokenized"]
    cmd += ["--tokenizer", "data/tokenizer"]

    def run_stage(out: str) -> bytes:
        subprocess.run(
            [*cmd, "--model", out, "--live", f"live-{out}"],
            cwd=repo,
            env=env({"OMP_DYNAMIC": "TRUE"}),
            check=True,
            capture_output=True,
            timeout=900,
        )
        return (repo / out / "model.safetensors").read_bytes()

    idle = run_stage("idle")
    # Niced: still runnable (the load average OMP_DYNAMIC reads counts them), but they leave the cores to the
    # rest of the suite when it needs them.
    busy = "import os; os.nice(19)\nwhile True: pass"
    load = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]
    try:
        loaded = run_stage("loaded")
    finally:
        for p in load:
            p.kill()
    assert idle == loaded, "weights differ when another process competes for the CPU"
    assert os.environ.get("OMP_DYNAMIC") != "TRUE"  # the test's own process was not changed


def test_short_copy_rows_train_beside_natural_blocks(workdir):
    """mix.copy_rows: every natural-text step also trains short copy rows (a batch of two row lengths); the step's
    loss is the mean over every label, so the copy loss is logged at every logging step."""
    params = load_params()
    mix = dataclasses.replace(params.mix, fraction=0.0, copy_rows=3, copy_context=16, copy_max_period=6)
    batch = lmask.train.step_batch(5, np.zeros((10, 64), dtype=np.int64), params.train, mix, 7, 320)
    assert batch.rows.shape == (4, 64) and not batch.copy_start.any()
    assert batch.short_rows.shape == (3, 16) and all(2 <= p <= 6 for p in batch.short_copy_start)
    assert batch.labels == 4 * 63 + 3 * 15 and batch.tokens == 4 * 64 + 3 * 16
    train(dataclasses.replace(params, mix=mix))
    plots = Path("metrics/train/baseline/plots/metrics")
    assert [line.split("\t")[0] for line in (plots / "copy_loss.tsv").read_text().splitlines()[1:]] == [
        "2",
        "4",
        "6",
        "8",
    ]
    info = json.loads(Path("models/baseline/train_info.json").read_text())
    assert info["tokens"] == 8 * (4 * 64 + 3 * 16)


def _sinusoids(n_positions: int, n_embd: int, scale: float) -> np.ndarray:
    """The Transformer's table written out: sin at even columns, cos at odd, frequency 10000^(-2k / n_embd)."""
    pos, k = np.arange(n_positions)[:, None], np.arange(n_embd // 2)[None, :]
    angle = pos * 10000.0 ** (-2 * k / n_embd)
    table = np.empty((n_positions, n_embd))
    table[:, 0::2], table[:, 1::2] = np.sin(angle), np.cos(angle)
    return scale * table


@pytest.mark.parametrize("trained", [False, True])
def test_train_positions_false_keeps_the_position_table_fixed_through_fine_tuning(workdir, trained):
    """model.train_positions: false leaves the sinusoidal position table exactly at its init in the baseline and in
    a schedule's fine-tuning, while the other weights train; true trains it."""
    params = load_params()
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, train_positions=trained))
    m = params.model
    table = _sinusoids(m.n_positions, m.n_embd, m.initializer_range * 2**0.5)
    train(params)
    lmask.train.train_masked(
        params, "half", 0, 0, Path("models/baseline"), Path("data/tokenized"), *(Path(f"{d}/ft") for d in OUTPUTS)
    )
    base, tuned = weights(), weights("models/ft")
    for folder, w in (("baseline", base), ("fine-tuned", tuned)):
        moved = not np.allclose(w["transformer.wpe.weight"].double().numpy(), table, rtol=0, atol=1e-7)
        assert moved == trained, folder
    assert not torch.equal(base["transformer.h.0.attn.c_attn.weight"], tuned["transformer.h.0.attn.c_attn.weight"])
