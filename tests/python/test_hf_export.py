"""Hugging Face out and in (`nibble-train export --format hf`, `nibble-train import --hf`), with transformers as
the oracle: the exported directory loads with AutoModelForCausalLM and AutoTokenizer, its held-out loss equals
nibble-train's eval loss, every layout's checkpoint exports the same tensors, transformers' own Llama imports and
resumes at tp = 1, tp = 2 and dp = 2 with ZeRO-1 with the HF model's loss, and everything nibble cannot represent is refused by name
before anything is written."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from test_train_cli import BINARY, MPIRUN, ROOT, TINY, run

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from nibble import hf_export, hf_import  # noqa: E402  (after the skips: they need transformers)

pytestmark = [pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built"),
              pytest.mark.skipif(MPIRUN is None, reason="mpirun (Open MPI) not found")]

SEQ, GLOBAL, MICRO, EVAL_BATCHES = 32, 8, 4, 2
STEPS = 8


def corpus(d):
    path = os.path.join(ROOT, "data", "kjv.txt")
    text = open(path, "rb").read(400_000) if os.path.isfile(path) else b"the quick brown fox jumps over the lazy dog. " * 9000
    out = os.path.join(d, "corpus.txt")
    with open(out, "wb") as f:
        f.write(text)
    return out, text


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf_tokens")
    path, text = corpus(str(d))
    for kind, extra in (("byte", []), ("bpe", ["--tokenizer", "bpe", "--vocab", "512"])):
        r = run(["prepare", "--input", path, "--out", str(d / kind)] + extra)
        assert r.returncode == 0, r.stderr
    return d, text


def job(tokens_dir, out, **overrides):
    args = ["--config", TINY, "--data.train", str(tokens_dir / "train.bin"), "--data.val", str(tokens_dir / "val.bin"),
            "--train.out_dir", str(out), "--train.threads", "1", "--train.steps", str(STEPS), "--train.global_batch",
            str(GLOBAL), "--train.micro_batch", str(MICRO), "--train.eval_batches", str(EVAL_BATCHES),
            "--train.sample_tokens", "0", "--model.seq_len", str(SEQ)]
    for k, v in overrides.items():
        args += ["--" + k.replace("__", "."), str(v)]
    return args


def final_eval(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        evals = [json.loads(line)["eval_loss"] for line in f if "eval_loss" in line]
    return evals[-1]


# Layouts that reproduce the single-rank run bit for bit in bf16 with FP64 sums (README): their exports must be
# the same tensors.
LAYOUTS = {"1": (0, {}), "tp2": (2, {"parallel__tp": 2}), "pp2": (2, {"parallel__pp": 2}),
           "dp2": (2, {"parallel__dp": 2})}


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    d, _ = data
    out = {}
    for name, (np_, layout) in LAYOUTS.items():
        o = tmp_path_factory.mktemp(f"run_{name}")
        r = run(job(d / "byte", o, parallel__reproducible_sums="true", **layout), np=np_)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = o
    return out


def export(checkpoint, out, *extra):
    """Through `nibble-train export` (a new Python process that imports transformers: seconds)."""
    r = run(["export", "--checkpoint", str(checkpoint), "--format", "hf", "--out", str(out)] + list(extra))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    """Each layout's fp32 export, made once: the one-rank run's by the CLI, the others in this process."""
    out = {}
    for name in LAYOUTS:
        o = tmp_path_factory.mktemp(f"hf_{name}") / "hf"
        if name == "1":
            export(runs[name] / "checkpoints", o)
        else:
            hf_export.export(str(runs[name] / "checkpoints"), str(o))
        out[name] = o
    return out


def eval_windows(val_bin):
    """nibble-train's eval batches (core/data/batch_sampler.cpp eval_batch): windows laid end to end."""
    ids = np.fromfile(val_bin, dtype=np.uint16).astype(np.int64)
    windows = (len(ids) - 1) // SEQ
    rows = []
    for e in range(EVAL_BATCHES):
        for i in range(GLOBAL):
            s = ((e * GLOBAL + i) % windows) * SEQ
            s = min(s, len(ids) - SEQ - 1)
            rows.append(ids[s:s + SEQ + 1])
    return torch.tensor(np.stack(rows))


def bf16_operands(model):
    """nibble's bf16 recipe feeds its GEMMs BF16-rounded operands (FP32 sums): the same rounding on every
    nn.Linear of the transformers model, everything else left to transformers."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data = m.weight.data.to(torch.bfloat16).float()
            m.register_forward_pre_hook(lambda mod, args: (args[0].to(torch.bfloat16).float(),))
    return model


def hf_loss(model_dir, val_bin, emulate_bf16=False):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if emulate_bf16:
        bf16_operands(model)
    w = eval_windows(val_bin)
    with torch.no_grad():
        logits = model(w[:, :-1]).logits.double()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1)).item()


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_export_loads_in_transformers_with_nibbles_eval_loss(data, runs, exports, layout):
    d, _ = data
    out = exports[layout]
    nibble_loss = final_eval(runs[layout])
    plain, emulated = hf_loss(out, d / "byte" / "val.bin"), hf_loss(out, d / "byte" / "val.bin", emulate_bf16=True)
    print(f"{layout}: nibble eval {nibble_loss:.9f}, transformers fp32 {plain:.9f} (rel {rel(plain, nibble_loss):.2e}), "
          f"with bf16 GEMM operands {emulated:.9f} (rel {rel(emulated, nibble_loss):.2e})")
    assert rel(plain, nibble_loss) < 1e-4
    assert rel(emulated, nibble_loss) < 2e-6  # the rest is FP32 summation order
    assert nibble_loss < math.log(256) - 1.0  # a trained model, not the uniform guess
    cfg = json.load(open(out / "config.json"))
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == cfg["num_attention_heads"]
    if layout != "1":  # the same model as the single-rank run's, bit for bit
        ref = safetensors_torch.load_file(exports["1"] / "model.safetensors")
        got = safetensors_torch.load_file(out / "model.safetensors")
        assert sorted(got) == sorted(ref)
        for name in ref:
            assert torch.equal(got[name], ref[name]), name


def test_tied_embeddings_under_pp_export(data, tmp_path):
    d, _ = data
    r = run(job(d / "byte", tmp_path / "run", model__tie_embeddings="true", parallel__pp=2), np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    out = export(tmp_path / "run" / "checkpoints", tmp_path / "hf")
    assert json.load(open(out / "config.json"))["tie_word_embeddings"] is True
    assert "lm_head.weight" not in safetensors_torch.load_file(out / "model.safetensors")
    nibble_loss = final_eval(tmp_path / "run")
    assert rel(hf_loss(out, d / "byte" / "val.bin"), nibble_loss) < 1e-4


def test_bf16_export_is_the_rounded_fp32_export(runs, exports, tmp_path):
    fp32 = safetensors_torch.load_file(exports["1"] / "model.safetensors")
    bf16 = safetensors_torch.load_file(export(runs["1"] / "checkpoints", tmp_path / "b", "--dtype", "bf16") /
                                       "model.safetensors")
    assert json.load(open(tmp_path / "b" / "config.json"))["dtype"] == "bfloat16"
    for name, t in fp32.items():
        assert bf16[name].dtype == torch.bfloat16 and torch.equal(bf16[name], t.to(torch.bfloat16)), name


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_exported_tokenizer_makes_nibbles_ids(data, tmp_path, kind):
    """AutoTokenizer of the export encodes the corpus to exactly the ids of `nibble-train prepare`'s token files
    (train and held-out text) and decodes them back to the text."""
    d, text = data
    vocab = 512 if kind == "bpe" else 256
    r = run(job(d / kind, tmp_path / "run", model__vocab=vocab, train__steps=1, optim__warmup=0))
    assert r.returncode == 0, r.stdout + r.stderr
    out = export(tmp_path / "run" / "checkpoints", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    val_bytes = int(len(text) * 0.02)  # prepare's default held-out fraction, split by bytes
    for part, file in ((text[:len(text) - val_bytes], "train.bin"), (text[len(text) - val_bytes:], "val.bin")):
        ids = tok.encode(part.decode("utf-8"), add_special_tokens=False)
        assert ids == np.fromfile(d / kind / file, dtype=np.uint16).tolist(), file
        assert tok.decode(ids) == part.decode("utf-8")


def tiny_llama(path, seed=0, **overrides):
    """transformers' own small Llama (no download), saved with save_pretrained."""
    cfg = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=SEQ, rms_norm_eps=1e-5, rope_theta=5000.0,
               initializer_range=0.1, tie_word_embeddings=False)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    model.save_pretrained(path)
    return path


IMPORTED_KEYS = ["--model.rope_theta", "5000", "--model.norm_eps", "1e-5"]


RESUME_LAYOUTS = {"tp1": (0, {}), "tp2": (2, {"parallel__tp": 2}),
                  "dp2_zero1": (2, {"parallel__dp": 2, "optim__zero": 1})}  # ZeRO-1 copies the weights into its shard


@pytest.mark.parametrize("layout", list(RESUME_LAYOUTS))
def test_imported_llama_resumes_with_its_transformers_loss(data, saved_llama, tmp_path, layout):
    d, _ = data
    hf = saved_llama
    np_, overrides = RESUME_LAYOUTS[layout]
    if layout == "tp1":  # the CLI once; in this process otherwise (no new interpreter importing transformers)
        r = run(["import", "--hf", str(hf), "--out", str(tmp_path / "ckpt")])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "--model.rope_theta 5000.0" in r.stdout and "--model.tie_embeddings false" in r.stdout
    else:
        hf_import.import_hf(str(hf), str(tmp_path / "ckpt"))
    manifest = json.load(open(tmp_path / "ckpt" / "step_00000000" / "manifest.json"))
    assert manifest["contents"] == "weights" and manifest["step"] == 0
    # lr 0: the one step changes nothing, so the final eval is the imported model's.
    r = run(job(d / "byte", tmp_path / "run", checkpoint__dir=tmp_path / "ckpt", optim__lr=0, train__steps=1,
                optim__warmup=0, **overrides) + IMPORTED_KEYS + ["--resume"], np=np_)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "holds model weights only" in r.stdout and "at step 0" in r.stdout
    nibble_loss = final_eval(tmp_path / "run")
    plain, emulated = hf_loss(hf, d / "byte" / "val.bin"), hf_loss(hf, d / "byte" / "val.bin", emulate_bf16=True)
    print(f"import {layout}: nibble eval {nibble_loss:.9f}, transformers fp32 {plain:.9f} (rel "
          f"{rel(plain, nibble_loss):.2e}), with bf16 GEMM operands {emulated:.9f} (rel {rel(emulated, nibble_loss):.2e})")
    assert rel(emulated, nibble_loss) < 1e-5
    assert rel(plain, nibble_loss) < 1e-3
    # The resumed run's own checkpoint is a full one (optimizer states and all).
    latest = open(tmp_path / "ckpt" / "latest").read().strip()
    assert latest == "step_00000001"
    assert json.load(open(tmp_path / "ckpt" / latest / "manifest.json"))["contents"] == "full"


def test_export_import_round_trip_and_nvfp4_fine_tuning(data, runs, exports, tmp_path):
    """export -> import gives back the checkpoint's parameters bit for bit; fine-tuning them in NVFP4 at tp = 2
    starts from the trained model's loss, not from a fresh model's."""
    from safetensors.torch import load_file

    d, _ = data
    hf_import.import_hf(str(exports["1"]), str(tmp_path / "ckpt"))
    original = load_file(runs["1"] / "checkpoints" / f"step_{STEPS:08d}" / "rank_00000.safetensors")
    imported = load_file(tmp_path / "ckpt" / "step_00000000" / "rank_00000.safetensors")
    assert sorted(imported) == sorted(k for k in original if k.startswith("model."))
    for name, t in imported.items():
        assert torch.equal(t, original[name]), name
    r = run(job(d / "byte", tmp_path / "run", checkpoint__dir=tmp_path / "ckpt", model__recipe="nvfp4",
                parallel__tp=2, train__steps=3, optim__warmup=1) + ["--resume"], np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    first = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"loss"' in line][0]
    assert first["step"] == 1
    trained = final_eval(runs["1"])
    assert abs(first["loss"] - trained) < 0.1 * trained, (first, trained)  # a fresh model starts at ln 256 = 5.55


@pytest.mark.parametrize("override, message", [
    (["--model.rope_theta", "10000"], "model.rope_theta = 5000.0, this job has 10000"),
    (["--model.heads", "8", "--model.rope_theta", "5000", "--model.norm_eps", "1e-5"], "model.heads = 4, this job has 8"),
])
def test_resume_refuses_a_model_the_import_does_not_describe(data, saved_llama, tmp_path, override, message):
    d, _ = data
    hf_import.import_hf(str(saved_llama), str(tmp_path / "ckpt"))
    r = run(job(d / "byte", tmp_path / "run", checkpoint__dir=tmp_path / "ckpt") + override + ["--resume"])
    assert r.returncode != 0 and message in r.stderr, r.stdout + r.stderr
    assert "step " not in r.stdout


def _mutate_config(path, **changes):
    cfg = json.load(open(path / "config.json"))
    cfg.update(changes)
    json.dump(cfg, open(path / "config.json", "w"))


def _mutate_weights(path, fn):
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    fn(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


REFUSALS = [
    ("model_type", lambda p: _mutate_config(p, model_type="mistral"), 'model_type = "mistral"'),
    ("architectures", lambda p: _mutate_config(p, architectures=["LlamaForSequenceClassification"]),
     'architectures = ["LlamaForSequenceClassification"]'),
    ("gqa", lambda p: _mutate_config(p, num_key_value_heads=2), "num_key_value_heads = 2"),
    ("attention_bias", lambda p: _mutate_config(p, attention_bias=True), "attention_bias = true"),
    ("mlp_bias", lambda p: _mutate_config(p, mlp_bias=True), "mlp_bias = true"),
    ("rope_scaling", lambda p: _mutate_config(p, rope_scaling={"rope_type": "linear", "factor": 2.0}),
     'rope_scaling = {"rope_type": "linear", "factor": 2.0}'),
    ("rope_parameters", lambda p: _mutate_config(p, rope_parameters={"rope_type": "yarn", "rope_theta": 5000.0}),
     'rope_parameters.rope_type = "yarn"'),
    ("hidden_act", lambda p: _mutate_config(p, hidden_act="gelu"), 'hidden_act = "gelu"'),
    ("moe", lambda p: _mutate_config(p, num_local_experts=8), "num_local_experts = 8"),
    ("head_dim", lambda p: _mutate_config(p, head_dim=32), "head_dim = 32"),
    ("vocab", lambda p: _mutate_config(p, vocab_size=70000), "vocab_size = 70000"),
    ("quantized", lambda p: _mutate_config(p, quantization_config={"quant_method": "bitsandbytes"}),
     "quantization_config ="),
    ("bias_tensor", lambda p: _mutate_weights(p, lambda s: s.update({"model.layers.0.self_attn.q_proj.bias":
                                                                      torch.zeros(64)})),
     "'model.layers.0.self_attn.q_proj.bias'"),
    ("missing_tensor", lambda p: _mutate_weights(p, lambda s: s.pop("model.layers.1.mlp.up_proj.weight")),
     "lack 'model.layers.1.mlp.up_proj.weight'"),
    ("shape", lambda p: _mutate_config(p, intermediate_size=96), "model.layers.0.mlp.gate_proj.weight has shape [128, 64]"),
    ("tied_mismatch", lambda p: _mutate_config(p, tie_word_embeddings=True),
     "tie_word_embeddings = true but lm_head.weight differs"),
    ("pickle_only", lambda p: (os.rename(p / "model.safetensors", p / "pytorch_model.bin")), "pytorch_model.bin"),
]


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("llama") / "llama")


@pytest.mark.parametrize("name, mutate, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_import_refuses_what_nibble_cannot_represent(saved_llama, tmp_path, capsys, name, mutate, message):
    hf = tmp_path / "llama"
    shutil.copytree(saved_llama, hf)
    mutate(hf)
    assert hf_import.main(["--hf", str(hf), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was written" in err, err
    assert sorted(os.listdir(tmp_path)) == ["llama"]  # no checkpoint, no temporary directory


def test_import_cli_refuses_before_writing(saved_llama, tmp_path, capsys):
    hf = tmp_path / "llama"
    shutil.copytree(saved_llama, hf)
    _mutate_config(hf, num_key_value_heads=2)
    r = run(["import", "--hf", str(hf), "--out", str(tmp_path / "ckpt")])
    assert r.returncode == 2 and "num_key_value_heads = 2 is not supported" in r.stderr, r.stderr
    assert "grouped-query" in r.stderr and not os.path.exists(tmp_path / "ckpt")
    os.makedirs(tmp_path / "taken" / "x")
    assert hf_import.main(["--hf", str(saved_llama), "--out", str(tmp_path / "taken")]) == 2
    assert "exists" in capsys.readouterr().err and os.listdir(tmp_path / "taken") == ["x"]


@pytest.mark.parametrize("args, message", [
    (["--format", "gguf"], "--format gguf is invalid; valid: hf"),
    (["--format", "hf", "--dtype", "fp16"], "--dtype fp16 is invalid; valid: fp32, bf16"),
    (["--format", "hf", "--tokens", "/nonexistent"], "--tokens '/nonexistent' is not a directory"),
])
def test_export_refusals(runs, tmp_path, capsys, args, message):
    assert hf_export.main(["--checkpoint", str(runs["1"] / "checkpoints"), "--out", str(tmp_path / "hf")] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was written" in err, err
    assert not os.listdir(tmp_path)


def test_export_refuses_a_non_checkpoint_and_a_full_out_dir(runs, tmp_path, capsys):
    r = run(["export", "--checkpoint", str(tmp_path), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert r.returncode == 2 and "is not a checkpoint" in r.stderr, r.stderr
    os.makedirs(tmp_path / "full" / "x")
    assert hf_export.main(["--checkpoint", str(runs["1"] / "checkpoints"), "--format", "hf", "--out",
                           str(tmp_path / "full")]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert os.listdir(tmp_path / "full") == ["x"]


def test_export_refuses_a_corrupted_shard(runs, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(runs["tp2"] / "checkpoints" / f"step_{STEPS:08d}", ckpt)
    with open(ckpt / "rank_00001.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    assert hf_export.main(["--checkpoint", str(ckpt), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    assert "rank_00001.safetensors' fails its CRC-32 check" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "hf")
