"""The memory account nibble-train prints and records (issue 17 item 3, launch/memory_account.h): each category
against what the model's shapes and the optimizer's codec imply, computed here from the config, and the
low-precision savings the account exists to show."""
import json

from test_train_cli import MPIRUN, needs_mpirun, run, tiny_args, tokens  # noqa: F401

# The tiny config: vocab 256, hidden 64, 2 layers, ffn 128, untied head.
V, H, L, F = 256, 64, 2, 128
PARAMS = V * H + L * (2 * H + 3 * H * H + H * H + 2 * F * H + H * F) + H + V * H


def account(tokens, out, np=0, **overrides):
    r = run(tiny_args(tokens, out, train__steps=4, train__sample_tokens=0, train__eval_batches=1,
                      checkpoint__every=0, **overrides), np=np)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "memory over steps 1-2, rank 0: parameters" in r.stdout, r.stdout
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    (memory,) = [rec["memory"] for rec in records if "memory" in rec]
    return memory


def test_categories_match_the_model_and_the_codec(tokens, tmp_path):
    m = account(tokens, tmp_path / "bf16", model__recipe="bf16")
    assert m["parameters"] == 4 * PARAMS and m["gradients"] == 4 * PARAMS
    assert 8 * PARAMS <= m["optimizer_states"] <= 8 * PARAMS + 4096  # AdamW: two FP32 moments (+ step counters)
    assert m["weight_caches"] == 0  # bf16 keeps no quantized weights
    assert m["persistent"] == m["parameters"] + m["gradients"] + m["optimizer_states"] + m["weight_caches"]
    assert m["peak"] >= m["persistent"] + m["saved_per_microbatch"] > m["persistent"]
    assert m["transient_at_peak"] == m["peak"] - m["persistent"]
    assert m["peak_source"] == "torch CPU allocations"


def test_low_precision_savings_show(tokens, tmp_path):
    bf16 = account(tokens, tmp_path / "bf16", model__recipe="bf16")
    low = account(tokens, tmp_path / "low", model__recipe="nvfp4", optim__state="fp8")
    dense = account(tokens, tmp_path / "dense", model__recipe="nvfp4", optim__state="fp8",
                    model__compress_activations="false")
    # COAT (on by default in quantized presets): the norms' and SwiGLU's inputs saved as FP8 groups, not FP32.
    assert low["saved_per_microbatch"] < dense["saved_per_microbatch"], (low, dense)
    compressed_bf16 = account(tokens, tmp_path / "cbf16", model__recipe="bf16", model__compress_activations="true")
    assert compressed_bf16["saved_per_microbatch"] < bf16["saved_per_microbatch"]
    # FP8 moments with their scales: about a quarter of the FP32 ones.
    assert low["optimizer_states"] < 0.3 * bf16["optimizer_states"], (low, bf16)
    # NVFP4 operands saved for backward instead of BF16/FP32 activations.
    assert low["saved_per_microbatch"] < 0.5 * bf16["saved_per_microbatch"], (low, bf16)
    assert low["weight_caches"] > 0  # the cached quantized weights, which bf16 does not have
    assert low["peak"] < bf16["peak"]


@needs_mpirun
def test_tensor_parallel_halves_the_sharded_parameters(tokens, tmp_path):
    one = account(tokens, tmp_path / "one")
    two = account(tokens, tmp_path / "two", np=2, parallel__tp=2)
    # Every matrix is split over tp; the norms (5 vectors of H) are replicated.
    norms = (2 * L + 1) * H
    assert two["parameters"] == 4 * ((PARAMS - norms) // 2 + norms), (one, two)


def test_bf16_attention_halves_the_cores_saves(tokens, tmp_path):
    # model.attention_precision = "bf16": the attention core saves q, k, v and its output as BF16, 2 bytes
    # instead of 4. At 8 x 128 tokens of hidden 64 that is 4 x 1024 x 64 x 2 bytes less per layer, 1 MiB in all.
    sizes = dict(model__seq_len=128, train__micro_batch=8)
    fp32 = account(tokens, tmp_path / "fp32", **sizes)
    bf16 = account(tokens, tmp_path / "bf16", model__attention_precision="bf16", **sizes)
    halved = 4 * (8 * 128) * H * 2 * L
    assert bf16["persistent"] == fp32["persistent"]
    assert bf16["peak"] <= fp32["peak"] - halved, (fp32, bf16, halved)
