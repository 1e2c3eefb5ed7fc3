"""nibble-train end to end: recipes lower the loss, bad configs fail before training with their message,
a SIGKILLed multi-rank job resumes bit for bit, and corrupted or truncated checkpoint shards are named.

The binary is the nibble-train that goes with the package under test: <build>/nibble-train beside
<build>/python_package (the package on PYTHONPATH), or the installed command (pip install)."""
import json
import os
import shutil
import signal
import importlib.util
import subprocess
import sys
import time

import pytest


def _nibble_train_under_test() -> str:
    """The nibble-train that goes with the package under test, found without importing it (the binary does not
    need nibble._C): <build>/nibble-train for a build tree's package (<build>/python_package/nibble), else the
    installed command beside this interpreter (pip install: the launcher that runs site-packages/nibble/_bin)."""
    spec = importlib.util.find_spec("nibble")
    package_dir = os.path.dirname(spec.origin) if spec and spec.origin else ""
    if os.path.basename(os.path.dirname(package_dir)) == "python_package":
        return os.path.join(os.path.dirname(os.path.dirname(package_dir)), "nibble-train")
    return os.path.join(os.path.dirname(sys.executable), "nibble-train")


BINARY = _nibble_train_under_test()
MPIRUN = shutil.which("mpirun")
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="mpirun (Open MPI) not found")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "examples", "configs", "tiny.toml")

pytestmark = pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built")

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
           OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    corpus = os.path.join(ROOT, "data", "kjv.txt")
    if not os.path.isfile(corpus):  # a small stand-in corpus when setup.sh has not fetched the KJV
        corpus = str(d / "corpus.txt")
        with open(corpus, "w") as f:
            f.write("the quick brown fox jumps over the lazy dog. " * 4000)
    r = subprocess.run([BINARY, "prepare", "--input", corpus, "--out", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d


def tiny_args(tokens, out, **overrides):
    args = ["--config", TINY, "--data.train", str(tokens / "train.bin"), "--data.val", str(tokens / "val.bin"),
            "--train.out_dir", str(out), "--train.threads", "1"]
    for k, v in overrides.items():
        args += ["--" + k.replace("__", "."), str(v)]
    return args


def run(args, np=0, timeout=300):
    cmd = [BINARY] + args
    if np:
        cmd = [MPIRUN, "-np", str(np), "--oversubscribe", "--bind-to", "none"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=ENV)


def losses(out):
    """step -> loss from metrics.jsonl (the last record of a step wins: a resumed run appends)."""
    result = {}
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                result[rec["step"]] = rec["loss"]
    return result


@pytest.mark.parametrize("recipe", ["bf16", "fp8_current", "mxfp8", "nvfp4"])
def test_thirty_steps_lower_the_loss(tokens, tmp_path, recipe):
    r = run(tiny_args(tokens, tmp_path, model__recipe=recipe, train__global_batch=4, train__micro_batch=2,
                      train__sample_tokens=16))
    assert r.returncode == 0, r.stdout + r.stderr
    curve = losses(tmp_path)
    assert sorted(curve) == list(range(1, 31))
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (28, 29, 30)) / 3
    # From the uniform guess (ln 256 = 5.55) a byte model reaches well under 4 nats in 30 steps.
    assert last < first - 1.0, curve
    assert "held-out loss" in r.stdout and "sample:" in r.stdout


@pytest.mark.parametrize("override, message", [
    (["--model.hiden", "64"], "unknown key 'model.hiden'"),
    (["--train.steps", "ten"], "train.steps = 'ten' has the wrong type; expected an integer"),
    (["--parallel.tp", "3"], "[parallel] layout"),
    (["--parallel.tp", "2"], "tp=2"),
    (["--train.global_batch", "6", "--train.micro_batch", "4"], "must be divisible by train.micro_batch * parallel.dp"),
    (["--model.recipe", "fp7"], "model.recipe = \"fp7\" is invalid"),
    (["--model.heads", "5"], "model.heads = 5 is invalid"),
    (["--optim.state", "fp3"], "[optim]"),
    (["--parallel.pp_layers", "2", "--parallel.pp_head_as_layer", "true"],
     "explicit layer counts cannot be combined with parallel.pp_embedding_as_layer / pp_head_as_layer"),
    (["--parallel.pp", "2", "--parallel.pp_head_as_layer", "true"],
     "2 layers + 1 (embedding/LM head counted as layers) = 3 do not split evenly over pp*v = 2"),
    (["--train.device", "gpu"], 'train.device = "gpu" is invalid: must be "auto", "cuda" or "cpu"'),
    (["--parallel.timeout_s", "0"], "parallel.timeout_s = 0.000000 is invalid: must be in (0, 86400] seconds"),
])
def test_bad_config_fails_before_training(tokens, tmp_path, override, message):
    r = run(tiny_args(tokens, tmp_path) + override)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert "[rank 0] config error" in r.stderr
    assert "step " not in r.stdout and not os.path.exists(tmp_path / "metrics.jsonl")


def _gpu_visible() -> bool:
    import torch  # only here: the rest of this file needs no torch
    return torch.cuda.is_available()


@pytest.mark.parametrize("np", [0, 2])
def test_cuda_device_without_a_gpu_fails_at_start_on_every_rank(tokens, tmp_path, np):
    if _gpu_visible():
        pytest.skip("a GPU is visible here: the no-GPU failure cannot happen (gpu_check.sh covers this machine)")
    if np and MPIRUN is None:
        pytest.skip("mpirun (Open MPI) not found")
    started = time.monotonic()
    layout = {"parallel__dp": np} if np else {}
    r = run(tiny_args(tokens, tmp_path, train__device="cuda", **layout), np=np, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    # Every rank refuses alike; mpirun may end a rank before it prints, so one rank's line is what is certain.
    assert 'config error: train.device = "cuda" but this rank sees no CUDA GPU' in r.stderr, r.stderr
    assert np or '[rank 0] config error: train.device = "cuda"' in r.stderr, r.stderr
    assert "step " not in r.stdout and not os.path.exists(tmp_path / "metrics.jsonl")
    assert time.monotonic() - started < 60  # refused before MPI starts: nothing waits on a peer


def test_auto_device_says_where_it_trains_and_which_kernels_run(tokens, tmp_path):
    r = run(tiny_args(tokens, tmp_path, model__recipe="nvfp4", train__steps=4, train__sample_tokens=0))
    assert r.returncode == 0, r.stdout + r.stderr
    where = ('device: cpu (train.device = "auto": no CUDA GPU is visible)' if not _gpu_visible() else
             "device: cpu (train.device = \"auto\":")
    assert where in r.stdout, r.stdout
    assert "GEMMs (nvfp4): fprop nvfp4 x nvfp4_2d: CPU emulation" in r.stdout, r.stdout
    r = run(tiny_args(tokens, tmp_path / "cpu", train__device="cpu", train__steps=4, train__sample_tokens=0))
    assert r.returncode == 0 and 'device: cpu (train.device = "cpu")' in r.stdout, r.stdout + r.stderr


def test_bad_toml_type_names_the_key(tokens, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[train]\nsteps = "many"\n')
    r = run(["--config", str(cfg)])
    assert r.returncode == 2 and "train.steps = 'many' has the wrong type; expected an integer" in r.stderr, r.stderr
    cfg.write_text('[bogus]\nx = 1\n')
    r = run(["--config", str(cfg)])
    assert r.returncode == 2 and "unknown key 'bogus.x'; valid sections: [model]" in r.stderr, r.stderr


def kill_session(sid):
    """SIGKILL mpirun and every rank it started: the ranks may sit in their own process groups, but all share
    the session started for mpirun."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split()
    for pid, s in zip(ps[::2], ps[1::2]):
        if int(s) == sid:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


SMALL = dict(model__hidden=32, model__heads=2, model__ffn_hidden=64, model__seq_len=16, train__global_batch=4,
             train__micro_batch=2, train__sample_tokens=0, train__eval_batches=1, train__steps=40,
             parallel__dp=2)


@needs_mpirun
def test_sigkill_and_resume_is_bit_exact(tokens, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = run(tiny_args(tokens, ref, **SMALL), np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    # The same job, checkpointing every 20 steps, SIGKILLed (the whole mpirun job) as soon as the step-20
    # checkpoint is committed (polling `latest`: mpirun forwards output too late for a job this fast).
    cmd = [MPIRUN, "-np", "2", "--oversubscribe", "--bind-to", "none", BINARY] + tiny_args(
        tokens, killed, checkpoint__every=20, **SMALL)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() == "step_00000020":
            kill_session(proc.pid)
            break
        time.sleep(0.002)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == -signal.SIGKILL, out
    assert latest.read_text().strip() == "step_00000020"
    r = run(tiny_args(tokens, killed, checkpoint__every=20, **SMALL) + ["--resume"], np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout and "at step 20" in r.stdout
    a, b = losses(ref), losses(killed)
    for step in range(21, 41):
        assert a[step] == b[step], f"step {step}: uninterrupted {a[step]!r} != resumed {b[step]!r}"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_shard_is_named_and_previous_checkpoint_untouched(tokens, tmp_path, damage):
    args = tiny_args(tokens, tmp_path, train__steps=4, checkpoint__every=2, train__global_batch=2,
                     train__micro_batch=2, train__sample_tokens=0, train__eval_batches=1)
    r = run(args)
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = tmp_path / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step_00000004"
    earlier = {p.name: p.read_bytes() for p in (ckpt / "step_00000002").iterdir()}
    shard = ckpt / "step_00000004" / "rank_00000.safetensors"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) - 100]
    shard.write_bytes(bytes(data))
    r = run(args + ["--resume", "--train.steps", "6"])
    assert r.returncode != 0
    assert str(shard) in r.stderr and ("corrupted" in r.stderr if damage == "flip" else "truncated" in r.stderr), r.stderr
    assert "step " not in r.stdout
    assert {p.name: p.read_bytes() for p in (ckpt / "step_00000002").iterdir()} == earlier
