"""nibble-train's checkpoint shards and the `safetensors` package (issue 16, item 5), both ways.

nibble -> safetensors: the package opens every shard nibble-train writes (core/checkpoint/safetensors.cpp),
finds the tensors the manifest lists with their dtypes and shapes, the shard's metadata (format, step, rank and
mesh coordinates) and the very bytes nibble's header points at.

safetensors -> nibble, through the trainer: a checkpoint whose shards the package rewrote (safetensors.torch.save_file, manifest sizes and CRCs updated) is
resumed by nibble-train and continues with the same losses, bit for bit, as the run that never stopped. The
optimizer-state codecs between them put every dtype nibble-train writes into the shards (F32, I64, BF16, U8).
The other dtypes nibble's reader accepts (F64, F16, I32, I16, I8, U16, BOOL, F8_E4M3) appear in no nibble
checkpoint: shards carrying extra package-written tensors of those dtypes are resumed (their header entries and
sizes pass nibble's checks), and a dtype nibble lacks is refused naming the file and the dtype.

Value by value, through nibble's own reader and writer bound to Python (nibble.read_safetensors /
write_safetensors, the code a resume uses): every dtype nibble reads, written by the package, comes back equal,
and what nibble writes the package reads back equal."""
import json
import os
import shutil
import struct
import zlib

import pytest
import torch

from test_train_cli import BINARY, losses, needs_mpirun, run, tiny_args, tokens  # noqa: F401

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built")

# A tiny model, 4 steps, checkpoints after steps 2 and 4 (warm-up 3 needs at least 3 steps).
SMALL = dict(model__hidden=32, model__heads=2, model__ffn_hidden=64, model__seq_len=16, train__global_batch=4,
             train__micro_batch=2, train__sample_tokens=0, train__eval_batches=1, train__steps=4,
             checkpoint__every=2, model__recipe="fp8_delayed")  # delayed scaling adds its amax histories
STATES = ["fp32", "bf16", "fp8", "int8"]  # optim.state codecs
MIDWAY = "step_00000002"
# The dtypes core/checkpoint/safetensors.cpp reads that no nibble-train checkpoint holds.
OTHER_DTYPES = [torch.float64, torch.float16, torch.int32, torch.int16, torch.int8, torch.uint16, torch.bool,
                torch.float8_e4m3fn]


@pytest.fixture(scope="module")
def finished_run(tokens, tmp_path_factory):  # noqa: F811 (tokens is test_train_cli's fixture)
    """state -> (args, output directory) of an uninterrupted 4-step run with that optimizer-state codec, run
    once per module."""
    runs = {}

    def get(state):
        if state not in runs:
            out = tmp_path_factory.mktemp(f"run_{state}")
            args = tiny_args(tokens, out, optim__state=state, **SMALL)
            r = run(args)
            assert r.returncode == 0, r.stdout + r.stderr
            runs[state] = (args, out)
        return runs[state]

    return get


def manifest(step_dir):
    with open(step_dir / "manifest.json") as f:
        return json.load(f)


def raw_header(path):
    """The file's JSON header as the format defines it (8-byte little-endian length, then JSON), and where the
    data starts: read here by hand, to check what the package reports against the bytes themselves."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length)), 8 + length


def check_shard_against_manifest(path, m, shard):
    data = path.read_bytes()
    assert len(data) == shard["bytes"] and zlib.crc32(data) == shard["crc32"]
    header, data_start = raw_header(path)
    assert data_start % 8 == 0  # the format pads its header so the data is 8-byte aligned
    with safe_open(str(path), "pt") as f:
        expected_metadata = {"format": m["format"], "step": str(m["step"])}
        expected_metadata.update({k: str(shard[k]) for k in ("rank", "tp_rank", "cp_rank", "dp_rank", "pp_rank")})
        assert f.metadata() == expected_metadata
        keys = set(f.keys())
        assert keys == set(header) - {"__metadata__"}
        for name in keys:
            entry = header[name]
            tensor = f.get_tensor(name)
            assert f.get_slice(name).get_dtype() == entry["dtype"] and list(tensor.shape) == entry["shape"]
            begin, end = entry["data_offsets"]
            stored = data[data_start + begin:data_start + end]
            assert tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() == stored, name
    return keys


@pytest.mark.parametrize("state", STATES)
def test_the_package_reads_every_shard_nibble_writes(finished_run, state):
    _, out = finished_run(state)
    checkpoints = out / "checkpoints"
    step_dirs = sorted(p for p in checkpoints.iterdir() if p.is_dir())
    assert [p.name for p in step_dirs] == [MIDWAY, "step_00000004"]
    for step_dir in step_dirs:
        m = manifest(step_dir)
        for shard in m["shards"]:
            path = step_dir / shard["file"]
            keys = check_shard_against_manifest(path, m, shard)
            tensors = load_file(str(path))
            for p in m["params"]:  # tp = 1: each rank holds the full parameter, in float32 (the master weights)
                t = tensors["model." + p["name"]]
                assert t.dtype == torch.float32 and list(t.shape) == p["full_shape"], p["name"]
            assert {k.split(".")[0] for k in keys} == {"model", "optim", "linear"}


@needs_mpirun
def test_the_package_reads_tensor_parallel_shards_that_join_to_the_full_parameters(tokens, tmp_path):  # noqa: F811
    args = tiny_args(tokens, tmp_path, parallel__tp=2, optim__state="fp32", **SMALL)
    r = run(args, np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    step_dir = tmp_path / "checkpoints" / "step_00000004"
    m = manifest(step_dir)
    assert len(m["shards"]) == 2
    shards = {}
    for shard in m["shards"]:
        check_shard_against_manifest(step_dir / shard["file"], m, shard)
        shards[shard["tp_rank"]] = load_file(str(step_dir / shard["file"]))
    for p in m["params"]:
        parts = [shards[rank]["model." + p["name"]] for rank in (0, 1)]
        whole = torch.cat(parts, p["shard_dim"]) if p["shard_dim"] >= 0 else parts[0]
        assert list(whole.shape) == p["full_shape"], p["name"]
        if p["shard_dim"] < 0:  # replicated over tp: both ranks hold the same values
            assert torch.equal(parts[0], parts[1]), p["name"]


def rewrite_with_the_package(step_dir, extra=None):
    """Every shard of ``step_dir`` re-written by safetensors.torch.save_file (its own header layout and order),
    plus ``extra`` tensors, with the shard's metadata; the manifest's sizes and CRCs updated to match."""
    m = manifest(step_dir)
    for shard in m["shards"]:
        path = step_dir / shard["file"]
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(path))
        tensors.update(extra or {})
        save_file(tensors, str(path), metadata=metadata)
        data = path.read_bytes()
        shard["bytes"], shard["crc32"] = len(data), zlib.crc32(data)
    with open(step_dir / "manifest.json", "w") as f:
        json.dump(m, f, indent=2)


def resume_from_rewritten_midway(finished, tmp_path, extra=None):
    """A fresh output directory holding only the finished run's midway checkpoint, rewritten by the package,
    resumed to the same end."""
    args, out = finished
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(out / "checkpoints" / MIDWAY, checkpoints / MIDWAY)
    (checkpoints / "latest").write_text(MIDWAY + "\n")
    rewrite_with_the_package(checkpoints / MIDWAY, extra)
    resumed_args = [a if a != str(out) else str(tmp_path) for a in args]
    return run(resumed_args + ["--resume"])


@pytest.mark.parametrize("state", STATES)
def test_nibble_resumes_bit_for_bit_from_shards_the_package_wrote(finished_run, state, tmp_path):
    r = resume_from_rewritten_midway(finished_run(state), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed from {tmp_path / 'checkpoints' / MIDWAY} at step 2" in r.stdout
    uninterrupted, resumed = losses(finished_run(state)[1]), losses(tmp_path)
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step] == uninterrupted[step], f"step {step}: {resumed[step]!r} != {uninterrupted[step]!r}"


def test_nibble_reads_package_shards_with_tensors_of_every_other_dtype_it_knows(finished_run, tmp_path):
    extra = {f"interop.{str(dtype).replace('torch.', '')}": torch.arange(-3, 3).reshape(2, 3).to(dtype)
             for dtype in OTHER_DTYPES}
    r = resume_from_rewritten_midway(finished_run("fp32"), tmp_path, extra)
    assert r.returncode == 0, r.stdout + r.stderr
    uninterrupted, resumed = losses(finished_run("fp32")[1]), losses(tmp_path)
    assert all(resumed[step] == uninterrupted[step] for step in (3, 4)), (resumed, uninterrupted)


def test_a_dtype_nibble_lacks_is_refused_naming_the_file_and_the_dtype(finished_run, tmp_path):
    e5m2 = {"interop.e5m2": torch.zeros(4).to(torch.float8_e5m2)}  # F8_E5M2: not in nibble's table
    r = resume_from_rewritten_midway(finished_run("fp32"), tmp_path, e5m2)
    shard = tmp_path / "checkpoints" / MIDWAY / "rank_00000.safetensors"
    assert r.returncode != 0
    assert str(shard) in r.stderr and "unsupported dtype 'F8_E5M2'" in r.stderr, r.stderr
    assert "step " not in r.stdout  # refused before training


# ---- value by value, through nibble's own reader and writer (nibble.read_safetensors / write_safetensors) ----

def test_nibble_reads_every_value_the_package_writes(tmp_path):
    import nibble

    torch.manual_seed(0)
    tensors = {f"t_{str(dt).split('.')[-1]}": (torch.randn(3, 5) * 50).to(dt) for dt in OTHER_DTYPES + [
        torch.float32, torch.bfloat16, torch.int64, torch.uint8]}
    tensors["empty"] = torch.zeros(0, 4)
    tensors["scalar"] = torch.tensor(2.5)
    path = str(tmp_path / "package.safetensors")
    save_file(tensors, path, metadata={"who": "the safetensors package"})
    got, metadata = nibble.read_safetensors(path)
    assert metadata == {"who": "the safetensors package"}
    assert sorted(got) == sorted(tensors)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        assert torch.equal(got[name].view(torch.uint8) if t.dtype == torch.float8_e4m3fn else got[name],
                           t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t), name


def test_the_package_reads_every_value_nibble_writes(tmp_path):
    import nibble

    torch.manual_seed(1)
    tensors = {"w": torch.randn(4, 6), "b": torch.randn(6).to(torch.bfloat16), "n": torch.arange(7),
               "codes": torch.randint(0, 255, (9,), dtype=torch.uint8)}
    path = str(tmp_path / "nibble.safetensors")
    nibble.write_safetensors(path, tensors, {"format": "test"})
    got = load_file(path)
    assert sorted(got) == sorted(tensors)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
