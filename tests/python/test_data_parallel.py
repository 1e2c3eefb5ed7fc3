"""The C++ optimizer over torch parameters (optim/torch/optimizer.h), DistributedDataParallel gradient buckets,
ZeRO-1 (ZeroAdamW), global clipping and the delayed-scaling amax reduction.

Oracles: torch.optim.AdamW (FP32 states), nibble.optim (the Python optimizer, for the compressed codecs) and
single-rank runs of the same optimizer on the concatenated batch.

Bit-identical vs. approximate, and why: the multi-rank tests use a model whose gradients are exact in FP32
(loss = mean over the batch of <D_s, P> with D_s small multiples of 2^-4, batch sizes and rank counts powers of
two): every partial sum and the averages are exactly representable, so the reduced gradient does not depend on
the reduction order, and the single-rank run on the concatenated batch sees the same bits. From there every
codec (fp32, bf16 with its Philox-keyed stochastic rounding, fp8, fp8_plain, int8) must be bit-identical for
DP and for ZeRO-1, whose shards keep each tensor's codec groups and stochastic-rounding indices (the int8
tensor is sized so every rank's piece has >= 4096 elements: smaller pieces would keep fp32 states, see
docs/PARALLEL.md). A nonlinear model (tanh MLP, random floats) has order-dependent gradient rounding, so there
DP and ZeRO-1 are compared with the single-rank run at <= 1e-5 relative (FP32 states).
"""
import pytest
import torch

import nibble
from nibble import _C
from mpi_run import check, needs_mpirun, run_ranks

torch.set_num_threads(2)
CODECS = ("fp32", "bf16", "fp8", "fp8_plain", "int8")


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [("w1", torch.randn(64, 80, generator=g)), ("b1", torch.randn(300, generator=g)),
            ("w2", torch.randn(40, 130, generator=g))]


def _grads(step, shapes):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=g) * (0.1 if step % 3 else 3.0) for s in shapes]


def test_cpp_optimizer_fp32_matches_torch_adamw_100_steps():
    ours = [(n, p.clone().requires_grad_()) for n, p in _params()]
    ref = [p.clone().requires_grad_() for _, p in _params()]
    opt = _C.TorchOptimizer(ours, dict(kind="adamw", state="fp32", lr=1e-2, weight_decay=0.1))
    torch_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.1)
    for step in range(100):
        for (_, p), q, g in zip(ours, ref, _grads(step, [p.shape for _, p in ours])):
            p.grad, q.grad = g.clone(), g.clone()
        assert opt.step() == (True, "")
        torch_opt.step()
    for (name, p), q in zip(ours, ref):
        rel = ((p.detach() - q.detach()).norm() / q.detach().norm()).item()
        assert rel <= 1e-6, (name, rel)


@pytest.mark.parametrize("codec", CODECS)
def test_cpp_optimizer_bit_identical_to_python_optimizer(codec):
    """nibble.optim.AdamW wraps this C++ optimizer: through the torch.optim front (param_groups, opt.state[p])
    it gives the bits the C++ object gives directly (bf16 parameters with and without FP32 masters, every
    codec), its states are the C++ states, and state_dict/load reproduces the run."""
    for dtype, master in ((torch.float32, "fp32"), (torch.bfloat16, "fp32"), (torch.bfloat16, "none")):
        ours = [(n, p.to(dtype).requires_grad_()) for n, p in _params()]
        ref = [p.to(dtype).requires_grad_() for _, p in _params()]
        cfg = dict(kind="adamw", state=codec, master=master, lr=1e-2, weight_decay=0.05, seed=7)
        opt = _C.TorchOptimizer(ours, cfg)
        py_opt = nibble.optim.AdamW(ref, lr=1e-2, weight_decay=0.05, state=codec, master=master, seed=7)
        saved = None
        for step in range(8):
            for (_, p), q, g in zip(ours, ref, _grads(step, [p.shape for _, p in ours])):
                p.grad, q.grad = g.to(dtype), g.to(dtype)
            opt.step()
            py_opt.step()
            if step == 3:
                saved = (opt.state_dict(), [p.detach().clone() for _, p in ours])
        for (name, p), q in zip(ours, ref):
            assert torch.equal(p.detach(), q.detach()), (codec, dtype, master, name)
        # state_dict keys and values match the Python optimizer's state
        state = opt.state_dict()
        for (name, p), q in zip(ours, ref):
            for key, t in py_opt.state[q].items():
                assert torch.equal(state[f"{name}.{key}"].reshape(-1), t.reshape(-1)), (codec, name, key)
        # resume from step 3 in a fresh optimizer: the same bits at the end
        resumed = [(n, w.clone().requires_grad_()) for (n, _), w in zip(ours, saved[1])]
        opt2 = _C.TorchOptimizer(resumed, cfg)
        opt2.load_state_dict(saved[0])
        for step in range(4, 8):
            for (_, p), g in zip(resumed, _grads(step, [p.shape for _, p in resumed])):
                p.grad = g.to(dtype)
            opt2.step()
        for (name, p), (_, q) in zip(resumed, ours):
            assert torch.equal(p.detach(), q.detach()), ("resume", codec, name)


def test_cpp_optimizer_sgd_nonfinite_and_errors():
    ours = [(n, p.clone().requires_grad_()) for n, p in _params()]
    ref = [p.clone().requires_grad_() for _, p in _params()]
    opt = _C.TorchOptimizer(ours, dict(kind="sgd", state="fp32", lr=0.1, momentum=0.9, weight_decay=0.01))
    torch_opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(20):
        for (_, p), q, g in zip(ours, ref, _grads(step, [p.shape for _, p in ours])):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        torch_opt.step()
    for (name, p), q in zip(ours, ref):  # torch's foreach SGD orders the FP32 operations differently
        rel = ((p.detach() - q.detach()).norm() / q.detach().norm()).item()
        assert rel <= 1e-6, (name, rel)
    before = [p.detach().clone() for _, p in ours]
    ours[1][1].grad[5] = float("nan")
    assert opt.find_nonfinite_grad() == "b1"
    assert opt.step() == (False, "b1")
    assert all(torch.equal(p.detach(), b) for (_, p), b in zip(ours, before))
    with pytest.raises(ValueError, match="state = .*fp16|fp16"):
        _C.TorchOptimizer(ours, dict(state="fp16"))
    with pytest.raises(ValueError, match="beta1"):
        _C.TorchOptimizer(ours, dict(beta1=1.5))
    with pytest.raises(ValueError, match="unique"):
        _C.TorchOptimizer([("a", ours[0][1]), ("a", ours[1][1])], {})


def test_data_parallel_does_not_import_parallel():
    """nibble.parallel re-exports nibble.data_parallel's classes; the reverse import made a cycle. data_parallel
    takes groups as communicators (like tensor_parallel and context_parallel), so it imports nothing of
    nibble.parallel."""
    import ast

    import nibble.data_parallel as dp

    with open(dp.__file__) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    assert not any(n == "parallel" or n.endswith(".parallel") for n in names), names


def test_optimizer_config_and_groups_in_cpp():
    """The C++ front-end holds per-group hyperparameters (torch's param_groups) and refuses to reinterpret
    existing states under another codec."""
    a, b = torch.zeros(300, requires_grad=True), torch.zeros(40, requires_grad=True)
    opt = _C.TorchOptimizer([("a", a)], dict(kind="sgd", lr=0.5, momentum=0.0))
    assert opt.add_param_group([("b", b)], dict(kind="sgd", lr=0.25, momentum=0.0)) == 1
    a.grad, b.grad = torch.ones(300), torch.ones(40)
    assert opt.step() == (True, "")
    assert torch.equal(a.detach(), torch.full((300,), -0.5)) and torch.equal(b.detach(), torch.full((40,), -0.25))
    with pytest.raises(ValueError, match="kind, seed and max_grad_norm belong to the optimizer"):
        opt.add_param_group([("c", torch.zeros(3, requires_grad=True))], dict(kind="adamw"))
    opt.set_group_config(1, dict(kind="sgd", lr=0.1, momentum=0.0))  # another lr: fine
    opt.set_group_config(1, dict(kind="sgd", lr=0.1, momentum=0.0, state="fp8"))  # no state yet (no momentum)
    adam = _C.TorchOptimizer([("a", a)], dict(state="fp32"))
    adam.step()
    with pytest.raises(ValueError, match="holds state in codec 'fp32'"):
        adam.set_group_config(0, dict(state="fp8"))
    with pytest.raises(ValueError, match="max_grad_norm"):
        _C.TorchOptimizer([("a", a)], dict(max_grad_norm=0.0))
    with pytest.raises(ValueError, match="seed"):
        _C.TorchOptimizer([("a", a)], dict(seed=-1))


_MULTI_RANK = r"""
import math, torch, nibble
from nibble import _C
import nibble.parallel as par
from nibble.data_parallel import DistributedDataParallel, ZeroAdamW, zero_gather_state, zero_split_state, reduce_amaxes
torch.set_num_threads(1)
rt = par.init(deadline=60)
R, r = rt.world_size, rt.rank
world = par.world()
CODECS = ("fp32", "bf16", "fp8", "fp8_plain", "int8")
# (name, shape): w is large enough that every rank's ZeRO piece keeps int8 states (>= 4096 elements)
SHAPES = [("w", (128, 256)), ("u", (40, 30)), ("b", (300,))]
N_LOCAL = 4  # samples per rank (power of two: exact averages)

def exact_batch(step):
    # D: small multiples of 2^-4 -> every gradient sum and average is exact in FP32, in any order.
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randint(-16, 17, (N_LOCAL * R,) + s, generator=g).float() / 16 for _, s in SHAPES]

class Exact(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        for name, s in SHAPES:
            self.register_parameter(name, torch.nn.Parameter(torch.randn(s, generator=g)))
    def forward(self, data):
        # loss = mean over samples of sum_j D_s[j] P[j]  (parameters used in registration order)
        return sum((d.reshape(d.shape[0], -1) @ getattr(self, n).reshape(-1)).mean() for (n, _), d in zip(SHAPES, data))

def local(data):
    return [d[r * N_LOCAL:(r + 1) * N_LOCAL] for d in data]

STEPS = 20
HYPER = dict(lr=1e-2, weight_decay=0.05, seed=3)

def run_single(codec, clip=None):
    m = Exact()
    opt = nibble.optim.AdamW(m.parameters(), state=codec, max_grad_norm=clip, **HYPER)
    for step in range(STEPS):
        m(exact_batch(step)).backward()
        opt.step(); opt.zero_grad()
    return m

def run_single_cpp(codec):
    m = Exact()
    opt = _C.TorchOptimizer(list(m.named_parameters()), dict(state=codec, **HYPER))
    for step in range(STEPS):
        m(exact_batch(step)).backward()
        opt.step(); opt.zero_grad()
    return opt.state_dict()

def run_ddp(codec, clip=None):
    m = Exact()
    ddp = DistributedDataParallel(m, bucket_mb=0.004)  # several buckets
    assert ddp.num_buckets >= 2, ddp.num_buckets
    opt = nibble.optim.AdamW(m.parameters(), state=codec, max_grad_norm=clip, **HYPER)
    for step in range(STEPS):
        ddp(local(exact_batch(step))).backward()
        opt.step(); opt.zero_grad()
    return m

def run_zero(codec, clip=None, fp8_all_gather=False):
    m = Exact()
    opt = ZeroAdamW(m, state=codec, max_grad_norm=clip, bucket_mb=0.004, fp8_all_gather=fp8_all_gather, **HYPER)
    for step in range(STEPS):
        m(local(exact_batch(step))).backward()
        opt.step(); opt.zero_grad()
    return m, opt

def same(a, b, what):
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p.detach(), q.detach()), (what, n, (p - q).abs().max().item())

for codec in CODECS:
    ref = run_single(codec)
    same(run_ddp(codec), ref, "ddp " + codec)
    z, zopt = run_zero(codec)
    same(z, ref, "zero " + codec)
    # ZeRO states: this rank's shard is exactly the single-rank state's split; gather(split(full)) == full
    full = run_single_cpp(codec)
    shapes = zopt.param_shapes()
    mine = zopt.state_dict()
    split = zero_split_state(full, shapes, zopt.config, R, r)
    assert sorted(mine) == sorted(split), (codec, sorted(mine), sorted(split))
    for k in mine:
        assert torch.equal(mine[k].reshape(-1), split[k].reshape(-1)), (codec, k)
    back = zero_gather_state([zero_split_state(full, shapes, zopt.config, R, q) for q in range(R)], shapes, zopt.config)
    assert sorted(back) == sorted(full)
    for k in full:
        assert torch.equal(back[k], full[k]), ("reshard", codec, k)
    # resharding to another dp size round-trips too
    other = 3
    back3 = zero_gather_state([zero_split_state(full, shapes, zopt.config, other, q) for q in range(other)], shapes,
                              zopt.config)
    assert all(torch.equal(back3[k], full[k]) for k in full), codec
    assert zopt.state_bytes() < sum(t.numel() * t.element_size() for t in full.values())

# global clipping (active: max norm far below the gradient norm) equals single-rank clipping, bit for bit here
ref = run_single("fp32", clip=0.05)
same(run_ddp("fp32", clip=0.05), ref, "ddp clip")
z, zopt = run_zero("fp32", clip=0.05)
same(z, ref, "zero clip")
assert zopt.last_step["clip"] < 1.0

# FP8 all-gather: the masters follow the exact trajectory (these gradients do not depend on the parameters);
# the model receives their per-128-block E4M3 round trip (scale 448/amax), torch's float8 cast as the oracle.
z8, _ = run_zero("fp32", fp8_all_gather=True)
ref = run_single("fp32")
for (n, p), (_, q) in zip(z8.named_parameters(), ref.named_parameters()):
    flat = q.detach().reshape(-1)
    pad = (-flat.numel()) % 128
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 128)
    amax = blocks.abs().amax(1, keepdim=True)
    # true divisions (torch evaluates `448.0 / amax` as 448 * reciprocal(amax))
    enc = torch.where(amax > 0, torch.full_like(amax, 448.0).div(amax), torch.ones_like(amax))
    deq = (blocks * enc).clamp(-448, 448).to(torch.float8_e4m3fn).float() * torch.ones_like(enc).div(enc)
    assert torch.equal(p.detach().reshape(-1), deq.reshape(-1)[:flat.numel()]), n

# Nonlinear model, random float data: gradient rounding depends on the reduction order -> <= 1e-5 relative.
def mlp():
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5))

def mlp_batch(step):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(N_LOCAL * R, 12, generator=g), torch.randn(N_LOCAL * R, 5, generator=g)

def mlp_loss(m, x, y):
    return torch.nn.functional.mse_loss(m(x), y)

ref = mlp()
ropt = nibble.optim.AdamW(ref.parameters(), lr=1e-2)
dm = mlp(); ddp = DistributedDataParallel(dm, bucket_mb=0.001); dopt = nibble.optim.AdamW(dm.parameters(), lr=1e-2)
zm = mlp(); zopt = ZeroAdamW(zm, lr=1e-2, bucket_mb=0.001)
for step in range(STEPS):
    x, y = mlp_batch(step)
    xs, ys = x[r * N_LOCAL:(r + 1) * N_LOCAL], y[r * N_LOCAL:(r + 1) * N_LOCAL]
    mlp_loss(ref, x, y).backward(); ropt.step(); ropt.zero_grad()
    mlp_loss(ddp, xs, ys).backward(); dopt.step(); dopt.zero_grad()
    mlp_loss(zm, xs, ys).backward(); zopt.step(); zopt.zero_grad()
for (n, p), (_, q), (_, s) in zip(dm.named_parameters(), zm.named_parameters(), ref.named_parameters()):
    for what, t in (("ddp", p), ("zero", q)):
        rel = ((t - s).norm() / s.norm()).item()
        assert rel <= 1e-5, (what, n, rel)

# NaN on one rank: every rank skips, nothing changes, the owner names the parameter
m = Exact(); zo = ZeroAdamW(m, bucket_mb=0.004)
before = [p.detach().clone() for p in m.parameters()]
data = local(exact_batch(0))
if r == R - 1:
    data[2][0, 0] = float("nan")
m(data).backward(); zo.step()
assert zo.last_step["skipped"], zo.last_step
assert all(torch.equal(p.detach(), b) for p, b in zip(m.parameters(), before))

# delayed scaling: pending amaxes max-reduced over the group, one collective for all states
states = [nibble.DelayedScaling(history_len=4) for _ in range(3)]
for i, s in enumerate(states):
    s.record(float(1 + i + 10 * r))
reduce_amaxes(states, world)
for i, s in enumerate(states):
    assert s.amax_history[0].item() == float(1 + i + 10 * (R - 1)), (i, s.amax_history)
print(f"OK rank {r}", flush=True)
"""


@needs_mpirun
@pytest.mark.parametrize("np", [2, 4])
def test_dp_and_zero_equal_single_rank(np):
    check(run_ranks(_MULTI_RANK, np=np, timeout=600), np=np)
