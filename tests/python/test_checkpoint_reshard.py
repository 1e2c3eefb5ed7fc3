"""Loading a checkpoint into another layout (issue 7: "save at tp=2, load at tp=1 and dp=2: same eval loss";
issue 20: ZeRO-1 and block-compressed optimizer states, range reads).

A job resumed with --checkpoint.resume and train.steps equal to the saved step trains nothing and ends with
the final held-out eval, so its eval loss must equal the saving job's final eval (bf16: tp and pp only change
FP32 summation orders, ~1e-7; the tolerance is 1e-5). Then training continues after a resharded load as it
does after a same-layout load; ZeRO-1 and fp8 states reshard (fp8 exactly where its 128-groups line up, with a
warning naming each parameter where they do not), and a checkpoint of another optimizer state codec is refused
with its files untouched. Bit-exactness of the pieces is tested in C++: tests/core/test_safetensors_index.cpp
(range reads), tests/parallel/test_tp_state_reshard.cpp (states), tests/core/test_sharded_init.cpp."""
import hashlib
import json
import math
import os
import re
import shutil

import pytest

from test_train_cli import MPIRUN, losses, run, tiny_args, tokens  # noqa: F401 (tokens is a fixture)

needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="mpirun (Open MPI) not found")


def final_eval(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    return [r["eval_loss"] for r in recs if r.get("final")][-1]


def train(tokens, out, np, steps=10, **overrides):
    r = run(tiny_args(tokens, out, train__steps=steps, train__sample_tokens=0, **overrides), np=np)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def tree_digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def saved_tp2(tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("tp2")
    train(tokens, out, 2, parallel__tp=2)
    return out


@needs_mpirun
@pytest.mark.parametrize("np,layout", [
    (0, {}),
    (2, {"parallel__dp": 2}),
    (2, {"parallel__pp": 2}),
    (2, {"parallel__cp": 2}),
    (4, {"parallel__tp": 2, "parallel__pp": 2, "parallel__sequence_parallel": "true"}),
], ids=lambda v: str(v))
def test_tp2_checkpoint_loads_into_other_layouts_with_the_same_eval_loss(tokens, tmp_path, saved_tp2, np, layout):
    before = tree_digest(saved_tp2 / "checkpoints")
    r = train(tokens, tmp_path, np, checkpoint__dir=str(saved_tp2 / "checkpoints"), checkpoint__resume="true",
              **layout)
    assert "checkpoint resharded from tp=2 cp=1 dp=1 pp=1" in r.stdout, r.stdout[-2000:]
    assert "no training in this run" in r.stdout
    ref, got = final_eval(saved_tp2), final_eval(tmp_path)
    assert abs(got - ref) <= 1e-5 * abs(ref), (layout, got, ref)
    assert tree_digest(saved_tp2 / "checkpoints") == before  # loading wrote nothing
    read, total = bytes_read(r)
    assert 0 < read <= total
    if "parallel__pp" in layout:  # stage 0 reads its own layers' parameters and states only
        assert read < 0.75 * total, (read, total)


def bytes_read(r):
    found = re.search(r"resharding read (\d+) of the (\d+) bytes", r.stdout)
    assert found, r.stdout[-2000:]
    return int(found.group(1)), int(found.group(2))


@needs_mpirun
def test_pipeline_checkpoint_with_tied_embeddings_loads_at_tp2(tokens, tmp_path_factory):
    """Saved at pp=2 (each stage's file holds only its layers; the last stage a copy of the tied embedding),
    loaded at tp=2: parameters are found by name across the stage files."""
    saved, loaded = tmp_path_factory.mktemp("pp2"), tmp_path_factory.mktemp("tp2")
    common = dict(model__tie_embeddings="true", model__layers=4)
    train(tokens, saved, 2, parallel__pp=2, **common)
    r = train(tokens, loaded, 2, parallel__tp=2, checkpoint__dir=str(saved / "checkpoints"),
              checkpoint__resume="true", **common)
    assert "resharded from tp=1 cp=1 dp=1 pp=2" in r.stdout
    assert abs(final_eval(loaded) - final_eval(saved)) <= 1e-5 * abs(final_eval(saved))


@needs_mpirun
def test_training_continues_after_a_resharded_load(tokens, tmp_path, saved_tp2):
    """From the tp=2 step-10 checkpoint, 5 more steps at tp=1 (resharded) and at tp=2 (same layout): the
    optimizer moments were resharded too, so the curves agree to FP32 reduction-order noise."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(saved_tp2 / "checkpoints", ckpt)
    same, moved = tmp_path / "same", tmp_path / "moved"
    shutil.copytree(ckpt, tmp_path / "ckpt_same")
    train(tokens, same, 2, steps=15, parallel__tp=2, checkpoint__dir=str(tmp_path / "ckpt_same"),
          checkpoint__resume="true")
    train(tokens, moved, 0, steps=15, checkpoint__dir=str(ckpt), checkpoint__resume="true")
    a, b = losses(same), losses(moved)
    assert sorted(a) == sorted(b) == [11, 12, 13, 14, 15]
    assert max(abs(a[s] - b[s]) / a[s] for s in a) <= 1e-4, (a, b)


def misaligned(step_dir, tp, group):
    """Parameters whose tp shards' rows are not whole groups of `group` (tp_state_reshard.h's rule)."""
    with open(os.path.join(step_dir, "manifest.json")) as f:
        params = json.load(f)["params"]
    out = set()
    for p in params:
        dim, shape = p["shard_dim"], p["full_shape"]
        if dim >= 0 and (shape[dim] // tp) * math.prod(shape[dim + 1:]) % group != 0:
            out.add(p["name"])
    return out


@needs_mpirun
def test_fp8_states_reshard_exactly_where_groups_align_and_say_where_not(tokens, tmp_path):
    saved = tmp_path / "fp8"
    train(tokens, saved, 2, parallel__tp=2, optim__state="fp8")
    before = tree_digest(saved / "checkpoints")
    r = train(tokens, tmp_path / "load", 0, optim__state="fp8", checkpoint__dir=str(saved / "checkpoints"),
              checkpoint__resume="true")
    assert "checkpoint resharded from tp=2 cp=1 dp=1 pp=1" in r.stdout, r.stdout[-2000:]
    warned = set(re.findall(r"resharded the optimizer state of (\S+): the 128-element groups", r.stderr))
    expected = misaligned(saved / "checkpoints" / "step_00000010", 2, 128)
    assert expected and warned == expected, (warned, expected)
    assert abs(final_eval(tmp_path / "load") - final_eval(saved)) <= 1e-5 * abs(final_eval(saved))
    assert tree_digest(saved / "checkpoints") == before


@pytest.fixture(scope="module")
def saved_zero(tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero")
    train(tokens, out, 2, parallel__dp=2, optim__zero=1, optim__state="fp8")
    return out


@needs_mpirun
@pytest.mark.parametrize("np,layout", [
    (0, {}),
    (2, {"parallel__tp": 2}),
    (2, {"parallel__cp": 2, "optim__zero": 1}),
], ids=lambda v: str(v))
def test_zero1_checkpoint_loads_into_other_layouts(tokens, tmp_path, saved_zero, np, layout):
    """Saved at dp=2 with ZeRO-1 (each file holds half of the flat fp8 states): gathered, then held whole
    (dp=1, tp=2) or split again over another dp x cp group."""
    r = train(tokens, tmp_path, np, optim__state="fp8", checkpoint__dir=str(saved_zero / "checkpoints"),
              checkpoint__resume="true", **layout)
    assert "checkpoint resharded from tp=1 cp=1 dp=2 pp=1" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    if "parallel__tp" not in layout:  # tp unchanged: every state is carried over as it was saved
        assert "resharded the optimizer state" not in r.stderr, r.stderr[-2000:]
    ref, got = final_eval(saved_zero), final_eval(tmp_path)
    assert abs(got - ref) <= 1e-5 * abs(ref), (layout, got, ref)


@needs_mpirun
def test_training_continues_after_a_zero1_checkpoint_is_resharded(tokens, tmp_path, saved_zero):
    """5 more steps from the dp=2 ZeRO-1 checkpoint at the same layout and at dp=1 without ZeRO: the states
    were gathered exactly (tp unchanged), so the curves agree to reduction-order noise."""
    for name in ("same", "moved"):
        shutil.copytree(saved_zero / "checkpoints", tmp_path / ("ckpt_" + name))
    train(tokens, tmp_path / "same", 2, steps=15, parallel__dp=2, optim__zero=1, optim__state="fp8",
          checkpoint__dir=str(tmp_path / "ckpt_same"), checkpoint__resume="true")
    train(tokens, tmp_path / "moved", 0, steps=15, optim__state="fp8",
          checkpoint__dir=str(tmp_path / "ckpt_moved"), checkpoint__resume="true")
    a, b = losses(tmp_path / "same"), losses(tmp_path / "moved")
    assert sorted(a) == sorted(b) == [11, 12, 13, 14, 15]
    assert max(abs(a[s] - b[s]) / a[s] for s in a) <= 1e-4, (a, b)


@needs_mpirun
def test_another_optimizer_state_codec_is_refused_untouched(tokens, tmp_path, saved_tp2):
    before = tree_digest(saved_tp2 / "checkpoints")
    r = run(tiny_args(tokens, tmp_path / "load", train__steps=10, train__sample_tokens=0, optim__state="int8",
                      checkpoint__dir=str(saved_tp2 / "checkpoints"), checkpoint__resume="true"), np=0)
    assert r.returncode != 0
    assert "the checkpoint's optim.state is 'fp32', this job's is 'int8'; resume with optim.state = fp32" in r.stderr, \
        r.stderr[-2000:]
    assert "not loaded" in r.stderr
    assert tree_digest(saved_tp2 / "checkpoints") == before
