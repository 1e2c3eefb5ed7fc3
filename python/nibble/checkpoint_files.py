"""nibble-train checkpoint directories from Python (core/checkpoint/manifest.h, checkpoint_dir.h): read one at any
layout into full parameter tensors, or write a weights-only one.

<root>/latest names the newest <root>/step_<8 digits>/, which holds manifest.json and rank_<5 digits>.safetensors
per rank. Parameters are "model.<name>" tensors, each rank's tp shard (split along the dim gpt.h documents);
cp and dp ranks hold equal copies, pp ranks different parameters. Reading verifies every shard's size and CRC-32
against the manifest first, as nibble-train's resume does.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import zlib

import torch

from .hf_layout import shard_dim

FORMAT = "nibble-checkpoint-1"


class CheckpointError(ValueError):
    pass


def step_dir_of(path: str) -> str:
    """A step directory (holds manifest.json), or a checkpoint root whose `latest` names one."""
    if os.path.isfile(os.path.join(path, "manifest.json")):
        return path
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            name = f.read().strip()
        found = os.path.join(path, name)
        if os.path.isfile(os.path.join(found, "manifest.json")):
            return found
        raise CheckpointError(f"'{latest}' names '{name}', which has no manifest.json")
    raise CheckpointError(f"'{path}' is not a checkpoint: no manifest.json in it and no `latest` file naming a step "
                          f"directory (pass a step_<n> directory or the checkpoint root, e.g. <out_dir>/checkpoints)")


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def read_manifest(step_dir: str) -> dict:
    with open(os.path.join(step_dir, "manifest.json")) as f:
        m = json.load(f)
    if m.get("format") != FORMAT:
        raise CheckpointError(f"'{step_dir}/manifest.json' has format {m.get('format')!r}, not '{FORMAT}'")
    return m


def read_full_params(step_dir: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(manifest, {parameter name: full float32 tensor}) gathered over the tp shards and pp stages of cp/dp rank 0."""
    from safetensors import safe_open

    m = read_manifest(step_dir)
    listed = {p["name"]: p for p in m["params"]}
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    for s in m["shards"]:
        if s.get("dp_rank", 0) != 0 or s.get("cp_rank", 0) != 0:
            continue  # a replica of dp/cp rank 0's shard
        path = os.path.join(step_dir, s["file"])
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        if size != s["bytes"]:
            raise CheckpointError(f"shard '{path}' has {size} bytes, the manifest says {s['bytes']}")
        if _crc32(path) != s["crc32"]:
            raise CheckpointError(f"shard '{path}' fails its CRC-32 check (manifest {s['crc32']}): corrupted")
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if key.startswith("model."):
                    # Tied embeddings under pp: the last stage's copy has the same name; either copy will do.
                    pieces.setdefault(key[len("model."):], {}).setdefault(s["tp_rank"], f.get_tensor(key))
    tp = m["layout"]["tp"]
    full = {}
    for name, by_rank in pieces.items():
        dim = listed[name]["shard_dim"] if name in listed else shard_dim(name)
        if dim < 0:
            full[name] = by_rank[0].float()
            continue
        missing = [t for t in range(tp) if t not in by_rank]
        if missing:
            raise CheckpointError(f"no shard of tp rank(s) {missing} holds 'model.{name}'")
        full[name] = torch.cat([by_rank[t] for t in range(tp)], dim).float()
        if name in listed and list(full[name].shape) != listed[name]["full_shape"]:
            raise CheckpointError(f"'model.{name}' gathers to {list(full[name].shape)}, the manifest says "
                                  f"{listed[name]['full_shape']}")
    return m, full


@contextlib.contextmanager
def staged_directory(dest: str):
    """A temporary sibling of `dest` to write into: renamed to `dest` when the block ends (replacing an empty
    directory there), removed with everything in it when the block raises -- so a failure leaves nothing."""
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(dest))}.tmp-{os.getpid()}")
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_weights_only(root: str, params: dict[str, torch.Tensor], model_keys: dict[str, str], source: dict) -> None:
    """A one-rank checkpoint at step 0 holding only parameters, marked contents = "weights" (manifest.h): a
    resume at any layout loads them and starts the optimizer and Linear states fresh. `root` must not exist yet:
    everything is written under a temporary sibling that is renamed into place last, so a failure leaves nothing."""
    from safetensors.torch import save_file

    with staged_directory(root) as tmp:
        step = os.path.join(tmp, "step_00000000")
        os.makedirs(step)
        shard = os.path.join(step, "rank_00000.safetensors")
        save_file({"model." + n: t.float().contiguous() for n, t in params.items()}, shard,
                  metadata={"format": FORMAT, "step": "0", "rank": "0", "tp_rank": "0", "cp_rank": "0",
                            "dp_rank": "0", "pp_rank": "0"})
        manifest = {
            "format": FORMAT,
            "contents": "weights",
            "step": 0,
            "consecutive_skips": 0,
            "skipped_total": 0,
            "recipe": "",  # weights from elsewhere: no nibble recipe trained them
            "layout": {"tp": 1, "cp": 1, "dp": 1, "pp": 1, "virtual_stages": 1, "pp_layers": "",
                       "pp_embedding_as_layer": False, "pp_head_as_layer": False, "world_size": 1,
                       "sequence_parallel": False},
            "source": source,
            "config": model_keys,
            "params": [{"name": n, "shard_dim": shard_dim(n), "full_shape": list(t.shape)} for n, t in params.items()],
            "shards": [{"file": "rank_00000.safetensors", "rank": 0, "tp_rank": 0, "cp_rank": 0, "dp_rank": 0,
                        "pp_rank": 0, "bytes": os.path.getsize(shard), "crc32": _crc32(shard)}],
        }
        with open(os.path.join(step, "manifest.json"), "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
        with open(os.path.join(tmp, "latest"), "w") as f:
            f.write("step_00000000\n")
