"""Per-layer quantization statistics (issue 18 item 1; docs/STATS.md): nibble-train's stats.jsonl and the Python
context manager nibble.nn.quantization_stats.

The figures themselves are checked against hand-computed values in tests/core/test_quantization_stats.cpp. Here:
the Python block's SNR of a Linear's input copy equals one computed in numpy from nibble.quantize's copy of the same
tensor; a tp = 2 run writes the statistics of a one-rank run (reduced over the group: one record per layer for the
whole tensor); bf16 layers have no records; a Python block reduced over 2 ranks equals one process on both halves."""
import json
import os

import numpy as np
import pytest
import torch

import nibble
from mpi_run import check, needs_mpirun, run_ranks
from test_train_cli import BINARY, TINY, run, tiny_args, tokens  # noqa: F401


def snr_db(x: np.ndarray, q: np.ndarray) -> float:
    return 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((q.astype(np.float64) - x) ** 2))


def test_python_block_measures_every_operand_of_a_linear():
    torch.manual_seed(0)
    layer = nibble.nn.Linear(64, 48, recipe="nvfp4", name="proj")
    x = torch.randn(32, 64, requires_grad=True)  # (so the backward runs dgrad, with its dy_row copy)
    layer(x).sum().backward()  # outside the block: nothing measured
    with nibble.nn.quantization_stats(layer) as stats:
        with torch.no_grad():
            layer.weight.mul_(1.0)  # a new version: quantized (and measured) again
        (layer(x) * torch.randn(32, 48)).sum().backward()
    assert set(stats.layers) == {"proj"}
    figures = stats.layers["proj"]
    assert set(figures) == set(nibble.nn.STAT_ROLES)
    # The forward's input copy is nvfp4 1x16 round-to-nearest: nibble.quantize makes the same copy.
    x = x.detach()
    q = nibble.quantize(x, "nvfp4").dequantize()
    assert figures["x_row"]["snr_db"] == pytest.approx(snr_db(x.numpy(), q.numpy()), rel=1e-9)
    assert figures["x_row"]["amax"] == pytest.approx(float(x.abs().max()))
    assert "bias" in figures["dy_col"] and "bias" not in figures["x_row"]  # SR only on the gradient
    with nibble.nn.quantization_stats(layer) as again:
        pass
    assert again.layers == {}  # nothing ran: nothing measured, and the previous block's sums are gone


def _records(out):
    with open(os.path.join(out, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


def _by_key(records):
    return {(r["step"], r["layer"]): r for r in records if "layer" in r}


@pytest.mark.parametrize("recipe", ["nvfp4", "fp8_current"])
def test_tp2_statistics_equal_one_rank(tokens, tmp_path, recipe):
    # FP64 sums make every tensor of the tp = 2 run equal the one-rank run's, so the reduced figures must agree up
    # to the order of their float64 sums.
    common = dict(model__recipe=recipe, train__steps=4, train__stats_every=4, optim__warmup=0, train__global_batch=2,
                  train__micro_batch=1, train__sample_tokens=0, parallel__reproducible_sums="true")
    one, two = tmp_path / "tp1", tmp_path / "tp2"
    r = run(tiny_args(tokens, one, **common))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(tiny_args(tokens, two, parallel__tp=2, **common), np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = _by_key(_records(one)), _by_key(_records(two))
    assert set(a) == set(b) and len(a) == 2 * 5  # tiny: 2 layers x 5 Linears at step 4; lm_head is bf16
    for key, rec in a.items():
        other = b[key]["operands"]
        assert set(rec["operands"]) == set(other), key
        for role, fig in rec["operands"].items():
            for name, value in fig.items():
                assert other[role][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, role, name)


def test_bf16_layers_have_no_records_and_steps_follow_stats_every(tokens, tmp_path):
    r = run(tiny_args(tokens, tmp_path, model__recipe="mxfp8", model__bf16_first=1, train__steps=4, optim__warmup=0,
                      train__stats_every=2, train__global_batch=2, train__micro_batch=1, train__sample_tokens=0))
    assert r.returncode == 0, r.stdout + r.stderr
    records = _records(tmp_path)
    assert not any("optimizer_state" in rec for rec in records)  # fp32 states: exact, not measured
    assert {rec["step"] for rec in records} == {2, 4}
    assert {rec["layer"] for rec in records} == {f"layers.1.{n}" for n in ("qkv", "out", "gate", "up", "down")}
    assert all(rec["recipe"] == "mxfp8" for rec in records)
    for rec in records:
        for fig in rec["operands"].values():
            assert 10 < fig["snr_db"] < 60 and 0 <= fig["flushed"] < 1 and 0 <= fig["clamped"] < 1


@pytest.mark.parametrize("codec, low, high", [("bf16", 45, 60), ("fp8", 25, 50), ("int8", 25, 55)])
def test_compressed_optimizer_states_error(tokens, tmp_path, codec, low, high):
    # Clipping on every step (grad_clip far below the norm), so the probe's expected moments must apply the same
    # coefficient the optimizer does: a probe that got the update wrong would see noise near the signal's size.
    # bf16 is written with stochastic rounding: a relative error of at most one ulp (2^-8 of the value at
    # worst, 2^-7 on a power of two) puts the SNR near 50 dB, and its bias near 0.
    r = run(tiny_args(tokens, tmp_path, model__recipe="bf16", optim__state=codec, optim__grad_clip=0.01,
                      optim__warmup=0, train__steps=3, train__stats_every=3, train__global_batch=2,
                      train__micro_batch=1, train__sample_tokens=0))
    assert r.returncode == 0, r.stdout + r.stderr
    states = {rec["optimizer_state"]: rec for rec in _records(tmp_path) if "optimizer_state" in rec}
    assert "layers.0.qkv.weight" in states and "lm_head.weight" in states
    if codec == "int8":  # tensors under 4096 elements keep FP32 states (bitsandbytes' rule): none measured
        assert "layers.0.attn_norm.weight" not in states
    for name, rec in states.items():
        assert rec["codec"] == codec and rec["step"] == 3
        for moment in ("exp_avg", "exp_avg_sq"):
            fig = rec[moment]
            assert low < fig["snr_db"] < high, (name, moment, fig)
            assert "clamped" not in fig and "scale_log2" not in fig  # no block scales to measure against
            assert ("bias" in fig) == (codec == "bf16")
            if codec == "bf16" and "norm" not in name:  # (a norm's 64 elements average too little noise away)
                assert abs(fig["bias"]) < 1e-3, (name, moment, fig)


@needs_mpirun
def test_models_gpt_block_equals_nibble_train_records(tokens, tmp_path):
    # nibble-train's first step with statistics, and the same step from Python: nibble.models.GPT (the same C++
    # model, init and batches) under the context manager. The same tensors are measured by the same code.
    overrides = dict(model__recipe="nvfp4", train__steps=1, train__stats_every=1, optim__warmup=0,
                     train__global_batch=2, train__micro_batch=1, train__sample_tokens=0)
    r = run(tiny_args(tokens, tmp_path, **overrides))
    assert r.returncode == 0, r.stdout + r.stderr
    expected = {rec["layer"]: rec["operands"] for rec in _records(tmp_path) if "layer" in rec}
    args = tiny_args(tokens, tmp_path / "py", **overrides)[2:]  # (--config TINY dropped)
    script = f"""
        import json, torch, nibble
        torch.set_num_threads(1)
        rt = nibble.parallel.init()
        config = nibble.models.load_config({TINY!r}, {dict((k[2:], v) for k, v in zip(args[::2], args[1::2]))!r})
        model = nibble.models.GPT(config)
        batches = nibble.models.TrainBatches(config, nibble.parallel.Mesh()).step(0)
        with nibble.nn.quantization_stats(model) as stats:
            for tokens, targets, stream in batches:
                model.set_rounding_stream(stream)
                (model(tokens, targets) / len(batches)).backward()
        with open({str(tmp_path / "py.json")!r}, "w") as f:
            json.dump(stats.layers, f)
        print(f"OK rank {{rt.rank}}", flush=True)
        nibble.parallel.shutdown()
    """
    check(run_ranks(script, np=1), np=1)
    with open(tmp_path / "py.json") as f:
        measured = json.load(f)
    assert set(measured) == set(expected) and len(expected) == 10
    for layer, operands in expected.items():
        assert set(measured[layer]) == set(operands), layer
        for role, figures in operands.items():
            assert set(measured[layer][role]) == set(figures), (layer, role)
            for name, value in figures.items():
                assert measured[layer][role][name] == pytest.approx(value, rel=1e-12), (layer, role, name)


@needs_mpirun
def test_python_block_reduced_over_two_ranks_equals_one_process():
    # mxfp8 has no per-tensor factor, so each rank's rows quantize as they would inside the whole batch; the
    # weight is the same on both ranks (a replica adds its copy again, which changes no ratio).
    script = """
        import torch, nibble
        torch.set_num_threads(1)
        rt = nibble.parallel.init()
        torch.manual_seed(1)
        x = torch.randn(64, 64)
        def measure(rows, group):
            torch.manual_seed(2)
            layer = nibble.nn.Linear(64, 32, recipe="mxfp8", name="proj")
            with nibble.nn.quantization_stats(layer, group=group) as s:
                layer(rows).sum().backward()
            return s.layers["proj"]
        whole = measure(x, None)
        world = nibble.parallel.world()
        half = measure(x[32 * world.rank: 32 * (world.rank + 1)], world)
        for role in ("x_row", "w_row", "x_col", "w_col"):
            for k, v in whole[role].items():
                for a, b in zip(half[role][k] if k == "scale_log2" else [half[role][k]], v if k == "scale_log2" else [v]):
                    assert abs(a - b) <= 1e-9 * max(1.0, abs(b)), (role, k, half[role][k], v)
        print(f"OK rank {world.rank}", flush=True)
        nibble.parallel.shutdown()
    """
    check(run_ranks(script, np=2))
