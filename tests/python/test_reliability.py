"""Injected faults in nibble-train (issue 19, docs/RELIABILITY.md): a stopped peer, a killed peer, a full disk
while a checkpoint is written, NaN storms in gradients and activations, resuming from the newest checkpoint that
verifies, and run records that survive kills at many points of a run.

Faults come from outside (signals, a file-size limit) or from the test-only hook NIBBLE_FAULT
(launch/fault_injection.h). Every test checks what the user sees (exit code, the message naming what failed) and
what is left on disk (the previous checkpoint, `latest`, metrics.jsonl)."""
import json
import os
import signal
import subprocess
import time

import pytest

from test_train_cli import BINARY, ENV, MPIRUN, kill_session, losses, needs_mpirun, run, tiny_args, tokens  # noqa: F401

SMALL = dict(model__hidden=32, model__heads=2, model__ffn_hidden=64, model__seq_len=16, train__global_batch=4,
             train__micro_batch=2, train__sample_tokens=0, train__eval_batches=1)


def records(out):
    """Every line of metrics.jsonl parsed (a torn or unreadable line fails the test)."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        text = f.read()
    # (empty when a kill came after the file was opened and before the first record: no line, so none torn)
    assert text == "" or text.endswith("\n"), "the last record is not a whole line"
    return [json.loads(line) for line in text.splitlines()]


def snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir()}


# ---- resume from the newest valid checkpoint ----------------------------------------------------------------

def test_latest_valid_skips_a_broken_newest_checkpoint(tokens, tmp_path):
    args = tiny_args(tokens, tmp_path, train__steps=6, checkpoint__every=2, **SMALL)
    r = run(args)
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = tmp_path / "checkpoints"
    newest = ckpt / "step_00000006" / "rank_00000.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    (ckpt / "step_00000004" / "manifest.json").unlink()  # the next one is broken too
    # resume = true stops, naming the shard; latest_valid falls back twice and says so.
    r = run(args + ["--train.steps", "8", "--checkpoint.resume", "true"])
    assert r.returncode == 1 and str(newest) in r.stderr and "corrupted" in r.stderr, r.stderr
    r = run(args + ["--train.steps", "8", "--checkpoint.resume", "latest_valid"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"checkpoint {ckpt / 'step_00000006'} is not usable: checkpoint shard '{newest}' is corrupted" in r.stderr
    assert "has no manifest.json" in r.stderr, r.stderr
    assert f"resuming from {ckpt / 'step_00000002'}" in r.stderr, r.stderr
    assert f"resumed from {ckpt / 'step_00000002'} at step 2" in r.stdout
    steps = [rec["step"] for rec in records(tmp_path) if "loss" in rec]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8], steps  # the records of the abandoned steps 3-6 were dropped


def test_malformed_manifest_is_named_and_latest_valid_falls_back(tokens, tmp_path):
    args = tiny_args(tokens, tmp_path, train__steps=4, checkpoint__every=2, **SMALL)
    assert run(args).returncode == 0
    manifest = tmp_path / "checkpoints" / "step_00000004" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["step"] = "four"
    manifest.write_text(json.dumps(m))
    r = run(args + ["--train.steps", "6", "--resume"])
    assert r.returncode == 1, r.stderr
    assert f"checkpoint '{manifest.parent}' has a malformed manifest.json: step = \"four\" is not an integer" in r.stderr
    m["step"] = 4
    m["shards"][0]["file"] = "../step_00000002/rank_00000.safetensors"  # a path out of the directory: refused
    manifest.write_text(json.dumps(m))
    r = run(args + ["--train.steps", "6", "--resume"])
    assert r.returncode == 1 and 'shards[0].file = "../step_00000002/rank_00000.safetensors" is not ' \
        '"rank_00000.safetensors"' in r.stderr, r.stderr
    r = run(args + ["--train.steps", "6", "--checkpoint.resume", "latest_valid"])
    assert r.returncode == 0 and "at step 2" in r.stdout, r.stdout + r.stderr


def test_latest_valid_with_nothing_valid_names_what_it_tried(tokens, tmp_path):
    args = tiny_args(tokens, tmp_path, train__steps=4, checkpoint__every=2, **SMALL)
    assert run(args).returncode == 0
    for step in (2, 4):
        (tmp_path / "checkpoints" / f"step_{step:08d}" / "rank_00000.safetensors").write_bytes(b"x")
    r = run(args + ["--train.steps", "6", "--checkpoint.resume", "latest_valid"])
    assert r.returncode == 1
    assert "no checkpoint under" in r.stderr and "step_00000004" in r.stderr and "step_00000002" in r.stderr, r.stderr


def test_bad_resume_and_on_error_values_are_named(tokens, tmp_path):
    r = run(tiny_args(tokens, tmp_path, checkpoint__resume="newest"))
    assert r.returncode == 2 and "checkpoint.resume = 'newest' is invalid" in r.stderr, r.stderr
    r = run(tiny_args(tokens, tmp_path, checkpoint__on_error="retry"))
    assert r.returncode == 2 and "checkpoint.on_error = 'retry' is invalid" in r.stderr, r.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text(open(tiny_args(tokens, tmp_path)[1]).read().replace("[parallel]", "[checkpoint]\nresume = 3\n\n[parallel]"))
    r = run(["--config", str(cfg)] + tiny_args(tokens, tmp_path)[2:])
    assert r.returncode == 2 and "checkpoint.resume = 3 has the wrong type; expected a boolean or a string" in r.stderr


# ---- run records ---------------------------------------------------------------------------------------------

def test_resume_drops_records_past_the_checkpoint_and_torn_lines(tokens, tmp_path):
    args = tiny_args(tokens, tmp_path, train__steps=12, checkpoint__every=4, **SMALL)
    assert run(args).returncode == 0
    # As if the job had died at step 10: `latest` at step 8, a half-written line at the end.
    (tmp_path / "checkpoints" / "latest").write_text("step_00000008\n")
    after = sum(1 for rec in records(tmp_path) if rec["step"] > 8)  # steps 9-12 and the final eval record
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "lo')
    r = run(args + ["--resume"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"dropped {after} record(s) of steps after the checkpoint and 1 unreadable line(s)" in r.stdout, r.stdout
    recs = records(tmp_path)
    assert [rec["step"] for rec in recs if "loss" in rec] == list(range(1, 13))
    assert {"step": 8, "resumed_from": str(tmp_path / "checkpoints" / "step_00000008")} in recs


@pytest.mark.parametrize("kill_after_s", [0.3, 0.6, 0.9, 1.2, 1.5, 1.8])
def test_sigkill_at_any_point_leaves_readable_records(tokens, tmp_path, kill_after_s):
    args = tiny_args(tokens, tmp_path, train__steps=60, checkpoint__every=5, **SMALL)
    proc = subprocess.Popen([BINARY] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    time.sleep(kill_after_s)
    proc.kill()
    proc.wait()
    if (tmp_path / "metrics.jsonl").exists():
        records(tmp_path)  # whole lines only, whenever the kill came
    r = run(args + ["--resume"])
    assert r.returncode == 0, r.stdout + r.stderr
    steps = [rec["step"] for rec in records(tmp_path) if "loss" in rec]
    assert steps == list(range(1, 61)), steps  # every step once, none twice


# ---- a full disk while a checkpoint is written ---------------------------------------------------------------

def limited(args, limit_bytes):
    """nibble-train with a file-size limit on its own writes (NIBBLE_FAULT=file_size_limit, RLIMIT_FSIZE set after
    MPI has started): a write past it fails with EFBIG, as one on a full disk fails with ENOSPC."""
    return subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=300,
                          env=dict(ENV, NIBBLE_FAULT=f"file_size_limit:{limit_bytes}"))


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_checkpoint_that_cannot_be_written(tokens, tmp_path, on_error):
    args = tiny_args(tokens, tmp_path, train__steps=4, checkpoint__every=4, **SMALL)
    assert run(args).returncode == 0
    ckpt = tmp_path / "checkpoints"
    before = snapshot(ckpt / "step_00000004")
    shard_bytes = (ckpt / "step_00000004" / "rank_00000.safetensors").stat().st_size
    r = limited(args + ["--resume", "--train.steps", "12", "--checkpoint.on_error", on_error], shard_bytes // 2)
    assert "checkpoint at step 8 was not written: checkpoint: rank 0 could not write its shard" in r.stderr, r.stderr
    assert "File too large" in r.stderr and "the previous checkpoint and `latest` are untouched" in r.stderr
    if on_error == "stop":
        assert r.returncode == 4, r.stdout + r.stderr
        assert "stopping (checkpoint.on_error = \"stop\")" in r.stderr
        assert max(rec["step"] for rec in records(tmp_path) if "loss" in rec) == 8
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stderr.count("training goes on (checkpoint.on_error = \"continue\")") == 2  # steps 8 and 12
        assert max(rec["step"] for rec in records(tmp_path) if "loss" in rec) == 12
    assert (ckpt / "latest").read_text().strip() == "step_00000004"
    assert snapshot(ckpt / "step_00000004") == before
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_00000004"]  # no half-written directory
    r = run(args + ["--resume", "--train.steps", "6"])  # and the previous checkpoint resumes
    assert r.returncode == 0 and "at step 4" in r.stdout, r.stdout + r.stderr


def user_namespace_mounts():
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (`unshare -rm`)."""
    try:
        r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@pytest.mark.skipif(not user_namespace_mounts(), reason="no user namespaces here: cannot mount a small tmpfs "
                    "(the file-size-limit test above covers the same code path with EFBIG)")
def test_checkpoint_on_a_full_filesystem(tokens, tmp_path):
    """A real ENOSPC: the checkpoints live on a tmpfs (mounted in a user namespace) that holds one checkpoint and
    half of a second. The namespace's mount vanishes with it, so the shell copies what is left back out."""
    args = tiny_args(tokens, tmp_path, train__steps=4, checkpoint__every=4, **SMALL)
    assert run(args).returncode == 0
    first = tmp_path / "checkpoints" / "step_00000004"
    used = sum(p.stat().st_size for p in first.iterdir())
    small, after = tmp_path / "small", tmp_path / "after"
    small.mkdir()
    size_kib = (used + used // 2) // 1024 + 8  # the first checkpoint, plus half of the next shard (and metadata)
    script = (f"mount -t tmpfs -o size={size_kib}k none {small} && cp -a {tmp_path / 'checkpoints'}/. {small}/ && "
              f"{BINARY} \"$@\"; rc=$?; df -k {small} | tail -1; cp -a {small}/. {after}/; exit $rc")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh"] + args +
                       ["--resume", "--train.steps", "8", "--checkpoint.dir", str(small)],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "checkpoint at step 8 was not written" in r.stderr and "No space left on device" in r.stderr, r.stderr
    assert "the previous checkpoint and `latest` are untouched" in r.stderr, r.stderr
    assert sorted(p.name for p in after.iterdir()) == ["latest", "step_00000004"]  # the half-written one is gone
    assert (after / "latest").read_text().strip() == "step_00000004"
    assert snapshot(after / "step_00000004") == snapshot(first)
    r = run(args + ["--resume", "--train.steps", "6", "--checkpoint.dir", str(after)])  # and it resumes
    assert r.returncode == 0 and "at step 4" in r.stdout, r.stdout + r.stderr


# ---- NaN storms ------------------------------------------------------------------------------------------------

def faulty(args, fault):
    return subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=300,
                          env=dict(ENV, NIBBLE_FAULT=fault))


def test_nan_gradient_storm_skips_steps_and_names_the_parameter(tokens, tmp_path):
    args = tiny_args(tokens, tmp_path, train__steps=8, train__max_nonfinite=3, **SMALL)
    r = faulty(args, "nan_grad:layers.0.up.weight:3:2")  # two bad steps: skipped, then training goes on
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("skipped: non-finite gradient in layers.0.up.weight") == 2, r.stderr
    recs = [rec for rec in records(tmp_path) if "loss" in rec]
    assert [rec["step"] for rec in recs if rec["skipped"]] == [3, 4]
    assert all(rec["grad_norm"] is None for rec in recs if rec["skipped"])
    r = faulty(tiny_args(tokens, tmp_path / "storm", train__steps=20, train__max_nonfinite=3, **SMALL),
               "nan_grad:final_norm.weight:5:10")  # a long storm: the run stops after max_nonfinite
    assert r.returncode == 3, r.stdout + r.stderr
    assert "stopping: 3 consecutive steps with non-finite gradients (train.max_nonfinite = 3)" in r.stderr


@pytest.mark.parametrize("recipe,param,message", [
    ("nvfp4", "embedding.weight", "error: layers.0.attn_norm: input contains NaN"),
    ("bf16", "layers.1.down.weight", "error: layers.1.down: the weight contains NaN"),
])
def test_nan_activation_stops_the_run_naming_the_layer(tokens, tmp_path, recipe, param, message):
    # nibble's decision (docs/RELIABILITY.md): a NaN reaching a layer's input or weight is refused by that layer,
    # in every recipe (TE would encode it and go on, and every later step would be meaningless); the job ends
    # naming the layer and tensor, and the checkpoint on disk is the last good state.
    args = tiny_args(tokens, tmp_path, train__steps=6, checkpoint__every=2, model__recipe=recipe, **SMALL)
    r = faulty(args, f"nan_param:{param}:4")
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    r = run(args + ["--resume"])  # without the fault the run goes on from the last checkpoint
    assert r.returncode == 0 and "at step 2" in r.stdout, r.stdout + r.stderr


def test_malformed_fault_value_is_refused(tokens, tmp_path):
    r = faulty(tiny_args(tokens, tmp_path, **SMALL), "nan_grad:layers.9.up.weight:1:1")
    assert r.returncode == 1 and "does not have" in r.stderr, r.stderr
    r = faulty(tiny_args(tokens, tmp_path, **SMALL), "nan_grad:layers.0.up.weight:0:1")
    assert r.returncode == 1 and "positive integers" in r.stderr, r.stderr


# ---- a stopped peer and a killed peer --------------------------------------------------------------------------

def rank_pid(mpirun_pid, rank):
    """The pid of world rank `rank` among the descendants of mpirun (OMPI_COMM_WORLD_RANK in its environment)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"nibble-train" in cmd and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            try:
                if os.getsid(int(pid)) == os.getsid(mpirun_pid):
                    return int(pid)
            except ProcessLookupError:
                continue
    return None


def start_job(tokens, out, **overrides):
    cmd = [MPIRUN, "-np", "2", "--oversubscribe", "--bind-to", "none", BINARY] + tiny_args(
        tokens, out, parallel__dp=2, **dict(SMALL, **overrides))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, start_new_session=True)


def wait_for_checkpoint(out, name, proc, limit=120):
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() == name:
            return True
        time.sleep(0.01)
    return False


def signal_rank_after_checkpoint(proc, out, sig):
    """Sends `sig` to world rank 1 of the job right after its step-10 checkpoint; returns the job's stderr and the
    seconds from the signal to the job's end. Whatever the launcher leaves (a stopped rank) is killed after."""
    try:
        assert wait_for_checkpoint(out, "step_00000010", proc), "no checkpoint at step 10"
        victim = rank_pid(proc.pid, 1)
        assert victim, "rank 1 not found"
        os.kill(victim, sig)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=120)
        return err.decode(errors="replace"), time.monotonic() - sent
    finally:
        kill_session(proc.pid)


@needs_mpirun
def test_sigstopped_peer_ends_the_job_within_the_deadline(tokens, tmp_path):
    timeout_s = 3
    proc = start_job(tokens, tmp_path, train__steps=100000, checkpoint__every=10, parallel__timeout_s=timeout_s)
    err, took = signal_rank_after_checkpoint(proc, tmp_path, signal.SIGSTOP)
    assert proc.returncode != 0
    assert took <= timeout_s + 10, f"the job took {took:.1f} s to end after rank 1 stopped"
    # The message names the group, the operation, the silent rank and the step.
    assert "timed out on group 'dp_cp'" in err or "timed out on group 'world'" in err, err
    assert "at step " in err and "silent: world rank 1" in err, err
    print(f"rank 1 SIGSTOPped: the job ended {took:.2f} s later (deadline {timeout_s} s + the 2 s liveness probe)")
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    r = run(tiny_args(tokens, tmp_path, parallel__dp=2, train__steps=int(latest[5:]) + 2, **SMALL) + ["--resume"],
            np=2)
    assert r.returncode == 0 and f"at step {int(latest[5:])}" in r.stdout, r.stdout + r.stderr


@needs_mpirun
def test_sigkilled_peer_ends_the_job_and_resume_is_bit_exact(tokens, tmp_path):
    ref = tmp_path / "ref"
    r = run(tiny_args(tokens, ref, parallel__dp=2, train__steps=30, **SMALL), np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "killed"
    proc = start_job(tokens, out, train__steps=30, checkpoint__every=10, parallel__timeout_s=10)
    _, took = signal_rank_after_checkpoint(proc, out, signal.SIGKILL)
    assert proc.returncode != 0 and took < 30, f"exit {proc.returncode} after {took:.1f} s"
    r = run(tiny_args(tokens, out, parallel__dp=2, train__steps=30, checkpoint__every=10, **SMALL) + ["--resume"],
            np=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout and ("at step 10" in r.stdout or "at step 20" in r.stdout), r.stdout
    a, b = losses(ref), losses(out)
    for step in range(11, 31):
        assert a[step] == b[step], f"step {step}: uninterrupted {a[step]!r} != resumed {b[step]!r}"
