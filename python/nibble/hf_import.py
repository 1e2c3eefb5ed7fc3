"""`nibble-train import --hf DIR --out CKPT` (also `python -m nibble.hf_import`): a Hugging Face Llama directory
(config.json + model.safetensors, or sharded with model.safetensors.index.json) as a nibble-train checkpoint root.

CKPT gets step_00000000/ (one rank's shard of full float32 parameters, q/k/v_proj joined into qkv:
nibble/hf_layout.py) and `latest`; its manifest says contents = "weights" (core/checkpoint/manifest.h), so
`nibble-train --checkpoint.dir CKPT --resume` at any layout and in any recipe loads the weights and starts the
optimizer, the Linear states and the step count fresh: fine-tuning from the Hugging Face model. The manifest
records the model keys, which the resumed job must match (it says which); import prints them as overrides.

nibble's GPT is a Llama without grouped-query attention, biases, RoPE scaling or experts. Whatever config.json
or the weights say outside that is refused, naming the key, its value and what is valid, before anything is
written (CKPT appears only when complete).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from . import hf_layout
from .checkpoint_files import write_weights_only


class ImportRefused(ValueError):
    pass


def _refuse(key: str, value, valid: str):
    raise ImportRefused(f"config.json: {key} = {json.dumps(value)} is not supported; valid: {valid}")


def _rope_theta(cfg: dict) -> float:
    """RoPE base from transformers 4 keys (rope_theta, rope_scaling) or 5 keys (rope_parameters)."""
    scaling = cfg.get("rope_scaling")
    if scaling is not None and not (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default"):
        _refuse("rope_scaling", scaling, "null (nibble's RoPE has no scaling: linear, dynamic, yarn, llama3 ...)")
    params = cfg.get("rope_parameters")
    theta = cfg.get("rope_theta")
    if params is not None:
        if not isinstance(params, dict):
            _refuse("rope_parameters", params, 'an object {"rope_type": "default", "rope_theta": ...}')
        if params.get("rope_type", "default") != "default":
            _refuse("rope_parameters.rope_type", params.get("rope_type"), '"default" (no RoPE scaling)')
        extra = sorted(set(params) - {"rope_type", "rope_theta"})
        if extra:
            _refuse(f"rope_parameters.{extra[0]}", params[extra[0]], "absent (only rope_type and rope_theta)")
        theta = params.get("rope_theta", theta)
    if cfg.get("partial_rotary_factor", 1.0) != 1.0:
        _refuse("partial_rotary_factor", cfg["partial_rotary_factor"], "1.0 (RoPE on the whole head)")
    theta = 10000.0 if theta is None else theta
    if not isinstance(theta, (int, float)) or not theta > 0:
        _refuse("rope_theta", theta, "a number > 0")
    return float(theta)


def _int(cfg: dict, key: str, lo: int, hi: int) -> int:
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _refuse(key, v, f"an integer in [{lo}, {hi}]")
    return v


def check_config(cfg: dict) -> dict:
    """The nibble model keys of a Llama config.json, or ImportRefused naming what nibble cannot represent."""
    if cfg.get("model_type") != "llama":
        _refuse("model_type", cfg.get("model_type"), '"llama" (nibble\'s GPT is a Llama decoder)')
    archs = cfg.get("architectures")
    if archs is not None and archs != ["LlamaForCausalLM"]:
        _refuse("architectures", archs, '["LlamaForCausalLM"]')
    if cfg.get("quantization_config") is not None:
        _refuse("quantization_config", cfg["quantization_config"], "absent (quantized weights: export them in "
                "float first)")
    for key, value in sorted(cfg.items()):  # Mixture of experts under any of its names
        if ("expert" in key or key.startswith("moe")) and value not in (None, 0, 1, False, [], {}):
            _refuse(key, value, "absent (no mixture of experts in nibble's GPT)")
    if cfg.get("hidden_act", "silu") != "silu":
        _refuse("hidden_act", cfg["hidden_act"], '"silu" (SwiGLU)')
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key, False) is not False:
            _refuse(key, cfg[key], "false (nibble's Linears have no bias)")
    vocab = _int(cfg, "vocab_size", 2, 65536)  # token files hold uint16 ids
    hidden = _int(cfg, "hidden_size", 1, 1 << 20)
    layers = _int(cfg, "num_hidden_layers", 1, 1 << 16)
    heads = _int(cfg, "num_attention_heads", 1, hidden)
    if hidden % heads or (hidden // heads) % 2:
        _refuse("num_attention_heads", heads, f"a divisor of hidden_size = {hidden} leaving an even head_dim (RoPE)")
    kv = cfg.get("num_key_value_heads")
    if kv is not None and kv != heads:
        _refuse("num_key_value_heads", kv, f"null or num_attention_heads = {heads} (nibble has no grouped-query "
                "attention)")
    if cfg.get("head_dim") not in (None, hidden // heads):
        _refuse("head_dim", cfg["head_dim"], f"null or hidden_size / num_attention_heads = {hidden // heads}")
    ffn = _int(cfg, "intermediate_size", 1, 1 << 24)
    eps = cfg.get("rms_norm_eps", 1e-6)
    if not isinstance(eps, (int, float)) or not eps > 0:
        _refuse("rms_norm_eps", eps, "a number > 0")
    tied = cfg.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        _refuse("tie_word_embeddings", tied, "true or false")
    for key in ("sliding_window", "use_sliding_window", "attention_chunk_size"):
        if cfg.get(key) not in (None, False):
            _refuse(key, cfg[key], "null (nibble's attention is full causal)")
    return {"vocab": vocab, "hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn,
            "rope_theta": _rope_theta(cfg), "norm_eps": float(eps), "tied": tied,
            "max_positions": cfg.get("max_position_embeddings")}


def _weight_files(hf_dir: str) -> list[str]:
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(hf_dir, name) for name in files]
    found = [n for n in os.listdir(hf_dir) if n.endswith((".bin", ".pt", ".pth"))]
    raise ImportRefused(f"'{hf_dir}' has no model.safetensors or model.safetensors.index.json" +
                        (f" (found {', '.join(sorted(found))}: pickled PyTorch weights are not read; save the model "
                         f"with save_pretrained(..., safe_serialization=True))" if found else ""))


def read_weights(hf_dir: str, k: dict) -> dict[str, torch.Tensor]:
    """The Llama tensors, checked against the config: every expected name at its shape, nothing else (a bias or
    any other extra tensor is refused by name)."""
    from safetensors import safe_open

    state = {}
    for path in _weight_files(hf_dir):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                state[name] = f.get_tensor(name)
    state.pop("model.rotary_emb.inv_freq", None)  # a buffer older transformers saved; derived from rope_theta
    for i in range(k["layers"]):
        state.pop(f"model.layers.{i}.self_attn.rotary_emb.inv_freq", None)
    if k["tied"] and "lm_head.weight" in state:
        if not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"]):
            raise ImportRefused("config.json: tie_word_embeddings = true but lm_head.weight differs from "
                                "model.embed_tokens.weight; valid: equal tensors, or tie_word_embeddings = false")
        del state["lm_head.weight"]
    names = hf_layout.hf_names(k["layers"], k["tied"])
    extra = sorted(set(state) - set(names))
    if extra:
        raise ImportRefused(f"the weights hold {extra[0]!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "") +
                            ", which nibble's GPT has no place for (biases, extra layers, other modules); valid: "
                            "exactly the tensors of a bias-free LlamaForCausalLM of config.json's sizes")
    missing = [n for n in names if n not in state]
    if missing:
        raise ImportRefused(f"the weights lack {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "") +
                            f" (config.json says {k['layers']} layers, tie_word_embeddings = {json.dumps(k['tied'])})")
    h, f_, v = k["hidden"], k["ffn"], k["vocab"]
    for name in names:
        want = ([v, h] if "embed" in name or name == "lm_head.weight" else [h] if "norm" in name
                else [f_, h] if "gate_proj" in name or "up_proj" in name else [h, f_] if "down_proj" in name else [h, h])
        if list(state[name].shape) != want:
            raise ImportRefused(f"{name} has shape {list(state[name].shape)}; config.json's sizes make it {want}")
        if not state[name].is_floating_point():
            raise ImportRefused(f"{name} has dtype {state[name].dtype}; valid: a floating-point dtype")
    return state


def model_keys(k: dict) -> dict[str, str]:
    """The nibble-train config keys this model needs, as the manifest records them (TOML text)."""
    return {"model.vocab": str(k["vocab"]), "model.hidden": str(k["hidden"]), "model.layers": str(k["layers"]),
            "model.heads": str(k["heads"]), "model.ffn_hidden": str(k["ffn"]), "model.rope_theta": repr(k["rope_theta"]),
            "model.norm_eps": repr(k["norm_eps"]), "model.tie_embeddings": "true" if k["tied"] else "false"}


def import_hf(hf_dir: str, out: str) -> dict[str, str]:
    """Writes the checkpoint root `out`; returns its model keys. Raises ImportRefused before writing anything."""
    if os.path.exists(out):
        raise ImportRefused(f"--out '{out}' exists; choose a new path (import never writes into an existing "
                            f"checkpoint directory)")
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ImportRefused(f"'{hf_dir}' has no config.json (a directory save_pretrained wrote is expected)")
    with open(config_path) as f:
        cfg = json.load(f)
    k = check_config(cfg)
    state = read_weights(hf_dir, k)
    params = hf_layout.hf_to_nibble({n: t.float() for n, t in state.items()}, k["layers"], k["heads"], k["tied"])
    keys = model_keys(k)
    write_weights_only(out, params, keys, {"hf_dir": os.path.abspath(hf_dir), "model_type": cfg["model_type"],
                                           "max_position_embeddings": k["max_positions"]})
    return keys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nibble-train import", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="a Hugging Face Llama directory (config.json, model.safetensors)")
    ap.add_argument("--out", required=True, help="the checkpoint root to create (pass it as --checkpoint.dir)")
    a = ap.parse_args(argv)
    try:
        keys = import_hf(a.hf, a.out)
    except (ImportRefused, OSError, json.JSONDecodeError) as e:
        print(f"nibble-train import: error: {e}; nothing was written", file=sys.stderr)
        return 2
    overrides = " ".join(f"--{key} {value}" for key, value in keys.items())
    print(f"imported {a.hf} to {a.out} (weights only, step 0). Fine-tune with:\n"
          f"  nibble-train --config JOB.toml --checkpoint.dir {a.out} --resume {overrides}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
