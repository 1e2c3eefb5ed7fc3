"""The adaptive policy's loss probe (model.adaptive_measure = "loss_probe", docs/ADAPTIVE.md): every
train.stats_every steps nibble-train evaluates adaptive_probe_batches fixed training batches as the model is and
with each block one rung up, and raises the block whose raise lowers that loss the most, by at least
adaptive_probe_gain %, after adaptive_patience probes in a row.

The oracle for what the probe measures is nibble.models.GPT from Python, built with the raised block's recipe and
loaded with the checkpoint the run wrote at the probe's step. A threshold of -100% makes the best block count at
every probe (whatever the gains), so the layouts and the resume below are checked on several switches."""
import json
import os
import shutil

import numpy as np
import torch

from test_adaptive_precision import records, switches, train
from test_train_cli import TINY, losses, tokens  # noqa: F401

PROBE = dict(model__adaptive_measure="loss_probe", model__adaptive_probe_batches=2)


def probes(out):
    return {rec["step"]: rec["loss_probe"] for rec in records(out, "loss_probe")}


def test_a_probe_that_never_decides_leaves_the_run_exactly_as_it_was(tokens, tmp_path):
    """No gain reaches 100%: no switch, and every loss equals the fixed-policy run's bit for bit. Layer 0 is
    fp8_delayed, so the probe's forwards record amaxes and its raise drops the delayed-scaling history: both
    must be undone (LinearState::Snapshot) for the losses to match."""
    layers = dict(model__layer_recipes="fp8_delayed,nvfp4")
    r = train(tokens, tmp_path / "probe", **PROBE, **layers, model__adaptive_probe_gain=100)
    train(tokens, tmp_path / "fixed", **layers, model__precision_policy="fixed")
    assert "one rung a block at a time, after 2 loss probe(s) in a row" in r.stdout, r.stdout
    assert switches(tmp_path / "probe") == []
    p = probes(tmp_path / "probe")
    assert sorted(p) == [2, 4, 6, 8], p
    for step, probe in p.items():
        assert probe["loss"] > 0 and set(probe["gain_pct"]) == {"layers.0", "layers.1"}, probe  # (bf16 head: top)
        assert all(np.isfinite(g) and g != 0 for g in probe["gain_pct"].values()), probe
    assert losses(tmp_path / "probe") == losses(tmp_path / "fixed")
    final = [rec for rec in records(tmp_path / "probe", "eval_loss") if rec.get("final")]
    assert final == [rec for rec in records(tmp_path / "fixed", "eval_loss") if rec.get("final")]


def probe_windows(tokens, batches, global_batch=8, seq_len=32):
    """The probe's batches: BatchSampler::eval_batch over the training split (window i of batch e starts at
    ((e * global_batch + i) % windows) * seq_len)."""
    data = torch.from_numpy(np.fromfile(tokens / "train.bin", dtype=np.uint16).astype(np.int64))
    windows = (len(data) - 1) // seq_len
    out = []
    for e in range(batches):
        starts = [((e * global_batch + i) % windows) * seq_len for i in range(global_batch)]
        out.append((torch.stack([data[s:s + seq_len] for s in starts]),
                    torch.stack([data[s + 1:s + seq_len + 1] for s in starts])))
    return out


def test_the_probe_measures_what_python_measures_on_the_checkpointed_weights(tokens, tmp_path):
    """At step 4 the run's probe loss and each block's gain equal nibble.models.GPT's losses on the same batches
    (two micro-batches of 4, as the trainer splits them), loaded with the step-4 checkpoint."""
    from nibble.checkpoint_files import read_full_params
    from nibble.models import GPT, load_config
    torch.set_num_threads(1)
    train(tokens, tmp_path, **PROBE, model__layer_recipes="nvfp4,nvfp4", model__adaptive_probe_gain=100,
          checkpoint__every=4, train__steps=5)
    _, params = read_full_params(str(tmp_path / "checkpoints" / "step_00000004"))
    batches = probe_windows(tokens, 2)

    def loss(layer_recipes):
        model = GPT(load_config(TINY, {"model.layer_recipes": layer_recipes}))
        model.load_state_dict(params)
        with torch.no_grad():
            chunks = [float(model(x[i:i + 4], y[i:i + 4])) for x, y in batches for i in (0, 4)]
        return sum(chunks) / len(chunks)

    probe = probes(tmp_path)[4]
    base = loss("nvfp4,nvfp4")
    assert abs(probe["loss"] - base) < 1e-6 * base, (probe, base)
    for block, raised in (("layers.0", "mxfp8,nvfp4"), ("layers.1", "nvfp4,mxfp8")):
        gain = 100 * (base - loss(raised)) / base
        assert abs(probe["gain_pct"][block] - gain) < 1e-4, (block, probe, gain)


FORCED = dict(PROBE, model__layer_recipes="nvfp4,nvfp4", model__adaptive_probe_gain=-100)


def test_every_rank_raises_the_same_block_after_the_same_step(tokens, tmp_path):
    """pp = 2, tp = 2 (reproducible sums) and dp = 2 reproduce the one-rank run's probes, switches and losses bit
    for bit; patience 1, so each of the four probes raises a block (the best one, which the gains decide)."""
    for name, np_, layout in [("pp2", 2, dict(parallel__pp=2)),
                              ("tp2", 2, dict(parallel__tp=2, parallel__reproducible_sums="true")),
                              ("dp2", 2, dict(parallel__dp=2))]:
        one = dict(parallel__reproducible_sums="true") if name == "tp2" else {}
        train(tokens, tmp_path / (name + "_one"), **FORCED, **one, model__adaptive_patience=1)
        train(tokens, tmp_path / name, np=np_, **FORCED, **layout, model__adaptive_patience=1)
        s = switches(tmp_path / name)
        assert sorted({step for step, *_ in s}) == [2, 4, 6, 8], (name, s)
        assert all(len({linear.split(".")[1] for st, linear, *_ in s if st == step}) == 1 for step in (2, 4, 6, 8)), s
        assert s == switches(tmp_path / (name + "_one")), name
        assert losses(tmp_path / name) == losses(tmp_path / (name + "_one")), name
        if name != "dp2":  # (dp = 2 averages two ranks' probe losses: equal up to the last bit's rounding)
            assert probes(tmp_path / name) == probes(tmp_path / (name + "_one")), name


def test_a_resumed_run_probes_and_switches_as_the_straight_one(tokens, tmp_path):
    """Patience 2: the probe at step 2 leaves one block's count at 1 in the step-2 checkpoint; the straight run
    raises that block after its step-4 probe, and so must the resumed job, which has only the recorded count to
    know that step 4's probe is the second in a row."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(tokens, a, **FORCED, checkpoint__every=2)
    shutil.copytree(a / "checkpoints" / "step_00000002", b / "checkpoints" / "step_00000002")
    (b / "checkpoints" / "latest").write_text("step_00000002\n")
    r = train(tokens, b, **FORCED, checkpoint__every=2, extra=["--resume"])
    assert "at step 2" in r.stdout, r.stdout
    assert [s[0] for s in switches(a)][:1] == [4], switches(a)
    full, resumed = losses(a), losses(b)
    assert sorted(resumed) == list(range(3, 11)) and all(resumed[s] == full[s] for s in resumed), (full, resumed)
    assert switches(b) == switches(a)
    assert probes(b) == {s: p for s, p in probes(a).items() if s > 2}
