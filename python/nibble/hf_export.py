"""`nibble-train export --checkpoint DIR --format hf --out OUT [--dtype fp32|bf16] [--tokens DIR]`
(also `python -m nibble.hf_export`): a nibble-train checkpoint, at any layout, as a Hugging Face Llama directory.

OUT receives config.json (LlamaForCausalLM), model.safetensors, generation_config.json and the tokenizer of the
token files the run trained on (tokenizer.json, tokenizer_config.json; nibble's byte or BPE tokenizer with the
same ids: nibble/hf_tokenizer.py). tp shards are joined, pp stages collected, cp/dp replicas read once
(nibble/checkpoint_files.py); qkv is split into q/k/v_proj (nibble/hf_layout.py). The tokenizer is found from the
manifest's data.train (its directory's meta.json), or --tokens DIR when the run's token files moved.
Everything is checked and built in memory first and written under a temporary directory renamed to OUT last:
a refusal or failure leaves no OUT behind. docs/HUGGINGFACE.md says what transformers then computes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from . import hf_layout, hf_tokenizer
from .checkpoint_files import CheckpointError, read_full_params, staged_directory, step_dir_of

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ExportError(ValueError):
    pass


def _model_keys(manifest: dict) -> dict:
    c = manifest["config"]

    def need(key):
        if key not in c:
            raise ExportError(f"the checkpoint's manifest records no {key}: written by an older nibble-train?")
        return c[key]

    hidden, heads = int(need("model.hidden")), int(need("model.heads"))
    ffn = int(need("model.ffn_hidden")) or ((hidden * 8 // 3) + 31) // 32 * 32  # gpt_config.h: 0 = the Llama width
    return {"vocab": int(need("model.vocab")), "hidden": hidden, "layers": int(need("model.layers")), "heads": heads,
            "ffn": ffn, "seq_len": int(need("model.seq_len")), "rope_theta": float(need("model.rope_theta")),
            "norm_eps": float(need("model.norm_eps")), "tied": need("model.tie_embeddings") == "true",
            "temperature": float(c.get("train.sample_temperature", "1.0"))}


def _tokens_dir(manifest: dict, override: str | None) -> str:
    if override:
        if not os.path.isdir(override):
            raise ExportError(f"--tokens '{override}' is not a directory")
        return override
    train = manifest["config"].get("data.train") or manifest.get("data", {}).get("train", "")
    d = os.path.dirname(train) or "."
    if not train or not os.path.isfile(train):
        raise ExportError(f"the run's token file data.train = '{train}' is not here (relative paths are from where "
                          f"nibble-train ran); pass --tokens DIR, the directory `nibble-train prepare` wrote "
                          f"(train.bin, meta.json), so the tokenizer can be exported")
    return d


def llama_config(k: dict, dtype: torch.dtype):
    from transformers import LlamaConfig

    # No BOS/EOS/pad: nibble trains on raw text without special tokens, so none of its ids means one.
    return LlamaConfig(vocab_size=k["vocab"], hidden_size=k["hidden"], intermediate_size=k["ffn"],
                       num_hidden_layers=k["layers"], num_attention_heads=k["heads"], num_key_value_heads=k["heads"],
                       head_dim=k["hidden"] // k["heads"], hidden_act="silu", max_position_embeddings=k["seq_len"],
                       rms_norm_eps=k["norm_eps"], rope_theta=k["rope_theta"], tie_word_embeddings=k["tied"],
                       attention_bias=False, mlp_bias=False, bos_token_id=None, eos_token_id=None,
                       pad_token_id=None, architectures=["LlamaForCausalLM"], dtype=dtype)


def export(checkpoint: str, out: str, dtype: str = "fp32", tokens: str | None = None) -> str:
    """Writes OUT; returns the step directory it read. Raises ExportError/CheckpointError before writing anything."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    if dtype not in _DTYPES:
        raise ExportError(f"--dtype {dtype} is invalid; valid: {', '.join(_DTYPES)}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ExportError(f"--out '{out}' exists and is not an empty directory; choose a new path")
    step_dir = step_dir_of(checkpoint)
    manifest, params = read_full_params(step_dir)
    k = _model_keys(manifest)
    kind, merges = hf_tokenizer.describe_tokens_dir(_tokens_dir(manifest, tokens))
    tok = hf_tokenizer.build(merges)
    if tok.get_vocab_size() > k["vocab"]:
        raise ExportError(f"the {kind} tokenizer makes {tok.get_vocab_size()} ids but model.vocab = {k['vocab']}")
    expected = hf_layout.hf_names(k["layers"], k["tied"])
    missing = [n for n in ["embedding.weight", "final_norm.weight"] + ([] if k["tied"] else ["lm_head.weight"])
               if n not in params]
    if missing or len(params) != len(expected) - 2 * k["layers"]:  # q, k, v are one qkv in nibble
        raise ExportError(f"the checkpoint holds {len(params)} parameters, not the {k['layers']}-layer model its "
                          f"manifest describes (missing {missing})")
    state = {n: t.to(_DTYPES[dtype]).contiguous()
             for n, t in hf_layout.nibble_to_hf(params, k["layers"], k["heads"], k["tied"]).items()}

    with staged_directory(out) as tmp:  # (an empty OUT, checked above, is replaced)
        llama_config(k, _DTYPES[dtype]).save_pretrained(tmp)
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        GenerationConfig(do_sample=True, temperature=k["temperature"], max_length=k["seq_len"]).save_pretrained(tmp)
        hf_tokenizer.save(tok, tmp)
        with open(os.path.join(tmp, "nibble_export.json"), "w") as f:  # where it came from, for the record
            json.dump({"checkpoint": os.path.abspath(step_dir), "step": manifest["step"],
                       "recipe": manifest.get("recipe", ""), "layout": manifest["layout"], "tokenizer": kind,
                       "dtype": dtype}, f, indent=2)
    return step_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nibble-train export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a step_<n> directory or a checkpoint root (its `latest`)")
    ap.add_argument("--format", required=True, help="hf (a Hugging Face Llama directory; the only format)")
    ap.add_argument("--out", required=True, help="the directory to create")
    ap.add_argument("--dtype", default="fp32", help="fp32 (default: the master weights exactly) or bf16")
    ap.add_argument("--tokens", default=None, help="the run's token directory, when data.train has moved")
    a = ap.parse_args(argv)
    try:
        if a.format != "hf":
            raise ExportError(f"--format {a.format} is invalid; valid: hf")
        step_dir = export(a.checkpoint, a.out, a.dtype, a.tokens)
    except (ExportError, CheckpointError, hf_tokenizer.TokenizerError, OSError) as e:
        print(f"nibble-train export: error: {e}; nothing was written", file=sys.stderr)
        return 2
    print(f"exported {step_dir} to {a.out} (Hugging Face LlamaForCausalLM, {a.dtype}); "
          f"transformers.AutoModelForCausalLM.from_pretrained('{a.out}') loads it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
