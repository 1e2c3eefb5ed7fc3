"""nibble.models.GPT against nibble-train, the oracle: the same parameters at init, the same per-step losses from
examples/train_gpt.py's plain PyTorch loop under mpirun -np 2 (dp = 2), the final parameters equal to nibble-train's
checkpoint; tp = 2 against tp = 1; nibble-train's refusals.

nibble-train is the one that goes with the package under test (test_train_cli.BINARY)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import nibble
from mpi_run import MPIRUN, check, needs_mpirun, run_ranks
from test_train_cli import BINARY, tokens  # noqa: F401 -- tokens: the corpus prepared by nibble-train prepare
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "examples", "configs", "tiny.toml")
EXAMPLE = os.path.join(ROOT, "examples", "train_gpt.py")
needs_binary = pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built")

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
           OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(nibble.__file__))),
                                       os.environ.get("PYTHONPATH", "")]))

MODEL = {"vocab": 256, "hidden": 64, "layers": 2, "heads": 4, "ffn_hidden": 128, "seq_len": 32, "seed": 3}


def overrides(tokens, out, **extra):
    o = {"data.train": str(tokens / "train.bin"), "data.val": str(tokens / "val.bin"), "train.out_dir": str(out),
         "train.threads": "1", "train.sample_tokens": "0", "train.eval_batches": "1"}
    o.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return [a for k, v in o.items() for a in ("--" + k, v)]


def run(cmd, np=0, timeout=300):
    if np:
        cmd = [MPIRUN, "-np", str(np), "--oversubscribe", "--bind-to", "none"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def records(path):
    """step -> the record with a loss (nibble-train's metrics.jsonl or the example's)."""
    out = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                out[rec["step"]] = rec
    return out


def checkpoint_tensors(out):
    ckpt = os.path.join(out, "checkpoints")
    with open(os.path.join(ckpt, "latest")) as f:
        step_dir = os.path.join(ckpt, f.read().strip())
    tensors, _ = nibble.read_safetensors(os.path.join(step_dir, "rank_00000.safetensors"))
    return tensors


@needs_binary
def test_initial_parameters_are_the_trainers(tokens, tmp_path):
    # nibble-train at lr = 0 saves its initial parameters after one step (AdamW moves nothing: p - 0 * u = p).
    run([BINARY, "--config", TINY] + overrides(tokens, tmp_path, train__steps=1, optim__lr=0, optim__warmup=0, model__seed=3))
    saved = checkpoint_tensors(str(tmp_path))
    model = nibble.models.GPT(MODEL)
    names = [n for n, _ in model.named_parameters()]
    # The trainer's names (the checkpoint also holds the optimizer's "<param>.<field>" states).
    assert len(names) == 2 + 7 * MODEL["layers"] + 1 and {"model." + n for n in names} <= set(saved)
    assert names[0] == "embedding.weight" and names[-2:] == ["final_norm.weight", "lm_head.weight"]
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.is_leaf and p.requires_grad
        assert torch.equal(p.detach(), saved["model." + name]), name


def test_autograd_and_optimizers_reach_the_cpp_leaves():
    model = nibble.models.GPT(dict(MODEL, recipe="nvfp4"))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (2, 33), generator=g)
    loss = model(tokens[:, :-1], tokens[:, 1:])
    assert loss.requires_grad and loss.dim() == 0
    loss.backward()
    params = list(model.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in params)
    before = [p.detach().clone() for p in params]
    opt = nibble.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    opt.step()
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    # The step reached the model the C++ forward uses: the loss changes.
    with torch.no_grad():
        assert model(tokens[:, :-1], tokens[:, 1:]).item() != loss.item()
    assert model.logits(tokens[:, :-1]).shape == (2 * 32, 256)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip():
    a, b = nibble.models.GPT(MODEL), nibble.models.GPT(dict(MODEL, seed=4))
    tokens = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert a(tokens[:, :-1], tokens[:, 1:]).item() != b(tokens[:, :-1], tokens[:, 1:]).item()
    leaves = [p for p in b.parameters()]
    b.load_state_dict(a.state_dict())
    assert all(x is y for x, y in zip(leaves, b.parameters()))  # copied into the same leaves
    for (n, p), (m, q) in zip(a.named_parameters(), b.named_parameters()):
        assert n == m and torch.equal(p, q)
    with torch.no_grad():
        assert a(tokens[:, :-1], tokens[:, 1:]).item() == b(tokens[:, :-1], tokens[:, 1:]).item()
    with pytest.raises(ValueError, match=r"missing \['lm_head.weight'\]"):
        b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "lm_head.weight"})
    bad = a.state_dict()
    bad["final_norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"final_norm.weight has shape \(3,\)"):
        b.load_state_dict(bad)


def test_a_toml_path_builds_the_same_model(tmp_path):
    from_file = nibble.models.GPT(TINY)
    from_dict = nibble.models.GPT({k: MODEL[k] for k in MODEL if k != "seed"} | {"seed": 0})
    for (n, p), (m, q) in zip(from_file.named_parameters(), from_dict.named_parameters()):
        assert n == m and torch.equal(p, q)


def trainer_message(tmp_path, toml_model_lines):
    """nibble-train's error for a [model] section, after its "config 'PATH': " / "error: " prefix."""
    path = tmp_path / "bad.toml"
    path.write_text("[model]\n" + toml_model_lines + "\n")
    r = subprocess.run([BINARY, "--config", str(path), "--train.steps", "1"], capture_output=True, text=True,
                       env=ENV)
    assert r.returncode != 0
    return r.stderr.strip()


@needs_binary
@pytest.mark.parametrize("config,toml,expected", [
    ({"hiddn": 64}, "hiddn = 64", "unknown key 'model.hiddn'; valid keys: model.adaptive_ladder"),
    ({"layers": "two"}, 'layers = "two"', "model.layers = 'two' has the wrong type; expected an integer"),
    ({"hidden": 66, "heads": 4}, "hidden = 66\nheads = 4", "model.hidden"),
    ({"recipe": "nvfp5"}, 'recipe = "nvfp5"', "nvfp5"),
])
def test_refusals_are_nibble_trains(tmp_path, config, toml, expected):
    with pytest.raises(ValueError) as err:
        nibble.models.GPT(config)
    mine = str(err.value)
    theirs = trainer_message(tmp_path, toml)
    assert expected in mine
    # The same sentence, after the source each names ("nibble.models config" / "config 'PATH'").
    tail = mine.split(": ", 1)[1] if mine.startswith("nibble.models config") else mine
    assert tail in theirs, (mine, theirs)


def test_other_refusals():
    with pytest.raises(ValueError, match=r"model.seed = None has the wrong type"):
        nibble.models.GPT({"seed": None})
    with pytest.raises(ValueError, match="either \\[model\\] keys"):
        nibble.models.GPT({"hidden": 64, "parallel": {"tp": 1}})
    with pytest.raises(ValueError, match="does not exist"):
        nibble.models.GPT("/nonexistent/config.toml")
    with pytest.raises(TypeError, match="config must be"):
        nibble.models.GPT(42)
    with pytest.raises(ValueError, match=r"whole model on one rank; the config asks for parallel.tp = 2"):
        nibble.models.GPT({"model": MODEL, "parallel": {"tp": 2}})
    with pytest.raises(ValueError, match=r'model.precision_policy = "adaptive" is nibble-train\'s'):
        nibble.models.GPT({"model": dict(MODEL, precision_policy="adaptive"), "train": {"stats_every": 5}})
    model = nibble.models.GPT(MODEL)
    with pytest.raises(ValueError, match=r"grad_norm reduces over the mesh's groups"):
        model.grad_norm()


@needs_binary
@needs_mpirun
def test_example_reproduces_nibble_train_at_dp2(tokens, tmp_path):
    # nvfp4 (stochastic rounding of the gradients: the rounding streams matter), 2 micro-batches per rank,
    # clipping active, warmup then cosine.
    common = overrides(tokens, tmp_path / "cpp", train__steps=4, model__recipe="nvfp4", parallel__dp=2,
                       train__global_batch=8, train__micro_batch=2, optim__grad_clip=0.5, optim__warmup=2,
                       optim__state="fp8")
    run([BINARY, "--config", TINY] + common, np=2)
    metrics = tmp_path / "python.jsonl"
    r = run([sys.executable, EXAMPLE, "--config", TINY, "--metrics", str(metrics)] + common, np=2)
    assert "step     4/4" in r.stdout
    theirs, mine = records(tmp_path / "cpp" / "metrics.jsonl"), records(metrics)
    assert sorted(mine) == sorted(theirs) == [1, 2, 3, 4]
    for step in theirs:  # bit for bit
        for key in ("loss", "lr", "grad_norm"):
            assert mine[step][key] == theirs[step][key], (step, key, mine[step], theirs[step])
    assert any(theirs[s]["grad_norm"] > 0.5 for s in theirs)  # the clipping path ran


@needs_mpirun
def test_tp2_loss_and_gradients_match_tp1():
    script = f"""
        import torch, nibble
        rt = nibble.parallel.init()
        torch.set_num_threads(1)
        tokens = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(5))
        x, y = tokens[:, :-1], tokens[:, 1:]
        for sums in (False, True):
            cfg = {{"model": dict({MODEL!r}, recipe="bf16"), "parallel": {{"reproducible_sums": sums}}}}
            one = nibble.models.GPT(cfg)
            mesh = nibble.parallel.Mesh(tp=2)
            two = nibble.models.GPT(cfg, mesh=mesh)
            assert two.tp_size == 2 and two.tp_rank == rt.rank
            l1, l2 = one(x, y), two(x, y)
            l1.backward(); l2.backward()
            if sums:
                assert l1.item() == l2.item(), (l1.item(), l2.item())
            else:
                assert abs(l1.item() - l2.item()) <= 1e-5 * abs(l1.item()), (l1.item(), l2.item())
            full = dict(one.named_parameters())
            for name, p in two.named_parameters():
                info = two.parameter_info(name)
                g = full[name].grad
                if info["shard_dim"] >= 0:
                    part = g.shape[info["shard_dim"]] // 2
                    g = g.narrow(info["shard_dim"], rt.rank * part, part)
                    assert torch.equal(p.detach(), full[name].detach().narrow(info["shard_dim"], rt.rank * part, part))
                if sums:  # FP64 sums: tp = 2 rounds as one rank does
                    assert torch.equal(p.grad, g), name
                else:  # FP32 partial sums in another order, then BF16 operands that round differently
                    assert (p.grad - g).abs().max() <= 2e-3 * g.abs().max(), name
        try:
            nibble.models.GPT(dict({MODEL!r}, heads=3, hidden=66), mesh=nibble.parallel.Mesh(tp=2))
            raise SystemExit("tp = 2 with 3 heads was accepted")
        except ValueError as e:
            assert "tp = 2 does not divide model.heads = 3" in str(e), e
        try:
            nibble.models.GPT({MODEL!r}, mesh=nibble.parallel.Mesh(pp=2))
            raise SystemExit("pp = 2 was accepted")
        except ValueError as e:
            assert "pipeline and context parallel training is nibble-train's" in str(e), e
        print(f"OK rank {{rt.rank}}", flush=True)
    """
    check(run_ranks(script, np=2, timeout=180))
