"""Every nibble-train config key has a failing-config test (issue 19): the list of keys comes from the trainer
itself (`nibble-train keys`), so a key added without a case here fails CI with a message saying what to add.

Each case overrides one key with a bad value on the tiny config and expects exit code 2 before any training, the
"[rank 0] config error" prefix, and the message naming the key and what is valid. A key whose every value is
acceptable (a free-form string, a boolean) says why in NO_RULE instead -- a decision a reviewer can see -- and is
still checked for its type where it has one."""
import os
import subprocess

import pytest

from test_train_cli import BINARY, run, tiny_args, tokens  # noqa: F401

# key -> [(bad value, text the error must contain), ...]
RULES = {
    "model.vocab": [("1", "model.vocab = 1 is invalid"), ("100", "model.vocab = 100 is invalid: must be >= 256")],
    "model.hidden": [("0", "model.hidden = 0 is invalid: must be >= 1")],
    "model.layers": [("0", "model.layers = 0 is invalid: must be >= 1")],
    "model.heads": [("5", "model.heads = 5 is invalid")],
    "model.ffn_hidden": [("-1", "model.ffn_hidden = -1 is invalid: must be >= 0")],
    "model.seq_len": [("1", "model.seq_len = 1 is invalid: must be >= 2")],
    "model.rope_theta": [("0", "model.rope_theta = 0.000000 is invalid: must be > 0")],
    "model.norm_eps": [("-1e-5", "model.norm_eps = -0.000010 is invalid: must be > 0")],
    "model.init_std": [("0", "model.init_std = 0.000000 is invalid: must be > 0")],
    "model.recipe": [("fp7", 'model.recipe = "fp7" is invalid')],
    "model.bf16_first": [("3", "model.bf16_first = 3 is invalid: must be in [0, model.layers = 2]")],
    "model.bf16_last": [("-1", "model.bf16_last = -1 is invalid: must be in [0, model.layers = 2]")],
    "model.lm_head_recipe": [("int3", 'model.lm_head_recipe = "int3" is invalid')],
    "model.precision_policy": [
        ("auto", 'model.precision_policy = "auto" is invalid: valid: "fixed", "adaptive" (raise a Linear\'s precision '
                 'from its statistics)')],
    "model.adaptive_ladder": [
        ("bf16, mxfp8", 'model.adaptive_ladder = "bf16, mxfp8" is invalid: entry 1: \'mxfp8\' is not more precise '
                        "than 'bf16' before it"),
        ("mxfp8, fp7", "entry 1: 'fp7'"),
        ("", "the ladder is empty")],
    "model.adaptive_snr_db": [("nan", "model.adaptive_snr_db = nan is invalid: must be finite (dB)")],
    "model.adaptive_patience": [
        ("0", "model.adaptive_patience = 0 is invalid: must be >= 1 (measurements in a row below "
              "model.adaptive_snr_db, or probes in a row)")],
    "model.adaptive_measure": [
        ("fisher", 'model.adaptive_measure = "fisher" is invalid: valid: "snr" (a Linear\'s worst copy against '
                   'model.adaptive_snr_db), "loss_probe"')],
    "model.adaptive_probe_gain": [("inf", "model.adaptive_probe_gain = inf is invalid: must be finite (% of the probe "
                                          "loss)")],
    "model.adaptive_probe_batches": [("0", "model.adaptive_probe_batches = 0 is invalid: must be >= 1 (training "
                                           "batches of train.global_batch sequences per probe)")],
    "model.recipe_overrides": [
        ("dy.rounding=up", 'model.recipe_overrides = "dy.rounding=up" is invalid: \'dy.rounding=up\': rounding takes '
                           "nearest or stochastic, not 'up'"),
        ("q.rht=true", "unknown operand 'q'"),
    ],
    "model.layer_recipes": [
        ("bf16", 'model.layer_recipes = "bf16" is invalid: lists 1 recipes for model.layers = 2'),
        ("bf16,fp7", "layer 1: 'fp7'"),
    ],
    "model.tie_embeddings": [("yes", "model.tie_embeddings = 'yes' has the wrong type; expected a boolean")],
    "model.compress_activations": [
        ("yes", 'model.compress_activations = "yes" is invalid: valid: "auto" (as each layer\'s recipe says), '
                '"true", "false"')],
    "model.recompute": [
        ("attention", 'model.recompute = "attention" is invalid: valid: "none", "selective" (the attention core), '
                      '"full" (every transformer layer)')],
    "model.attention_precision": [
        ("fp16", 'model.attention_precision = "fp16" is invalid: valid: "fp32", "bf16" (the attention core\'s inputs '
                 'and arithmetic)')],
    "model.seed": [("x", "model.seed = 'x' has the wrong type; expected an integer")],
    "data.train": [("/nonexistent/train.bin", "data.train = '/nonexistent/train.bin' is invalid: the token file cannot be opened")],
    "data.val": [("/nonexistent/val.bin", "data.val = '/nonexistent/val.bin' is invalid: the token file cannot be opened")],
    "data.seed": [("1.5", "data.seed = '1.5' has the wrong type; expected an integer")],
    "train.steps": [("0", "train.steps = 0 is invalid: must be >= 1"), ("ten", "expected an integer")],
    "train.global_batch": [("0", "train.global_batch = 0 is invalid: must be >= 1"),
                           ("6", "train.global_batch = 6 is invalid: must be divisible by train.micro_batch")],
    "train.micro_batch": [("0", "train.micro_batch = 0 is invalid: must be >= 1")],
    "train.eval_every": [("-1", "train.eval_every = -1 is invalid: must be >= 0")],
    "train.eval_batches": [("0", "train.eval_batches = 0 is invalid: must be >= 1")],
    "train.max_nonfinite": [("0", "train.max_nonfinite = 0 is invalid: must be >= 1")],
    "train.stats_every": [("-5", "train.stats_every = -5 is invalid: must be >= 0 (0 = no quantization statistics)")],
    "train.sample_tokens": [("-1", "train.sample_tokens = -1 is invalid: must be >= 0")],
    "train.sample_temperature": [("0", "train.sample_temperature = 0.000000 is invalid: must be > 0")],
    "train.threads": [("-1", "train.threads = -1 is invalid: must be >= 0")],
    "train.device": [("gpu", 'train.device = "gpu" is invalid: must be "auto", "cuda" or "cpu"')],
    "optim.optimizer": [("lamb", "optim.optimizer = 'lamb' is invalid: must be adamw or sgd")],
    "optim.state": [("fp3", "unknown optimizer state codec 'fp3'")],
    "optim.schedule": [("step", "unknown LR schedule 'step'; valid: constant, cosine, linear")],
    "optim.lr": [("-1", "optim.lr = -1 is invalid: must be a finite number >= 0")],
    "optim.min_lr_ratio": [("2", "min_ratio must be in [0, 1], got 2")],
    "optim.weight_decay": [("-0.1", "optim.weight_decay = -0.10000000000000001 is invalid: must be >= 0")],
    "optim.beta1": [("1", "optim.beta1 = 1 is invalid: must be in [0, 1)")],
    "optim.beta2": [("1.5", "optim.beta2 = 1.5 is invalid: must be in [0, 1)")],
    "optim.eps": [("-1", "optim.eps = -1 is invalid: must be >= 0")],
    "optim.grad_clip": [("-1", "optim.grad_clip = -1.000000 is invalid: must be >= 0")],
    "optim.warmup": [("-1", "warmup_steps must be >= 0, got -1"), ("100", "must be >= warmup_steps (100)")],
    "optim.zero": [("2", "optim.zero = 2 is invalid: must be 0 (off) or 1")],
    "optim.zero_fp8_all_gather": [("true", "optim.zero_fp8_all_gather = true is invalid: needs optim.zero = 1")],
    "parallel.tp": [("0", "parallel.tp = 0 is invalid: must be >= 1"), ("2", "tp=2")],
    "parallel.dp": [("0", "parallel.dp = 0 is invalid: must be >= 1")],
    "parallel.sequence_parallel": [("on", "expected a boolean")],
    "parallel.reproducible_sums": [("1", "expected a boolean")],
    "parallel.timeout_s": [("0", "parallel.timeout_s = 0.000000 is invalid: must be in (0, 86400] seconds")],
    "parallel.pp": [("0", "parallel.pp = 0 is invalid: must be >= 1")],
    "parallel.cp": [("0", "parallel.cp = 0 is invalid: must be >= 1")],
    "parallel.pp_schedule": [("zigzag", "pipeline schedule 'zigzag' is unknown; valid: gpipe, 1f1b, interleaved")],
    "parallel.virtual_stages": [("0", "parallel.virtual_stages = 0 is invalid: must be >= 1"),
                                ("2", "must be 1 unless parallel.pp_schedule = \"interleaved\"")],
    "parallel.pp_layers": [("1,1,1", "[parallel] pipeline split")],
    "parallel.pp_embedding_as_layer": [("maybe", "expected a boolean")],
    "parallel.pp_head_as_layer": [("maybe", "expected a boolean")],
    "parallel.cp_method": [("tree", "parallel.cp_method = 'tree' is invalid: must be ring or ulysses")],
    "parallel.overlap_grad_reduce": [("sometimes", "expected a boolean")],
    "parallel.grad_bucket_mb": [("0", "parallel.grad_bucket_mb = 0.000000 is invalid: must be in (0, 65536]"),
                                ("nan", "parallel.grad_bucket_mb = nan is invalid")],
    "checkpoint.every": [("-1", "checkpoint.every = -1 is invalid: must be >= 0")],
    "checkpoint.resume": [("newest", "checkpoint.resume = 'newest' is invalid")],
    "checkpoint.on_error": [("retry", "checkpoint.on_error = 'retry' is invalid: must be \"stop\" or \"continue\"")],
}

# Keys whose every value (of the right type) is valid, and why.
NO_RULE = {
    "train.sample_prompt": "any text primes the sample",
    "train.out_dir": "any path; created at start (a path that cannot be created fails the run, not the config)",
    "checkpoint.dir": "any path; \"\" = <out_dir>/checkpoints",
}


def schema():
    out = subprocess.run([BINARY, "keys"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def test_every_key_has_a_failing_case_or_a_stated_reason():
    keys = schema()
    missing = sorted(set(keys) - set(RULES) - set(NO_RULE))
    assert not missing, ("config keys without a failing-config case in tests/python/test_config_rules.py (add one to "
                         f"RULES, or a reason to NO_RULE): {missing}")
    stale = sorted((set(RULES) | set(NO_RULE)) - set(keys))
    assert not stale, f"cases for keys nibble-train no longer has: {stale}"


CASES = [(key, value, message) for key, cases in RULES.items() for value, message in cases]


@pytest.mark.parametrize("key,value,message", CASES, ids=[f"{k}={v}" for k, v, _ in CASES])
def test_bad_value_fails_before_training(tokens, tmp_path, key, value, message):
    args = tiny_args(tokens, tmp_path)
    # The key under test wins over tiny_args' own data paths (given after them).
    r = run(args + ["--" + key, value])
    assert r.returncode == 2, f"--{key} {value}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    assert message in r.stderr, f"--{key} {value}: expected {message!r} in\n{r.stderr}"
    assert "[rank 0] config error" in r.stderr
    assert "step " not in r.stdout and not os.path.exists(tmp_path / "metrics.jsonl")
