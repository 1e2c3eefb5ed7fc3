"""Layers built without a seed key their stochastic rounding by their name (nibble.nn.layer_seed, the C++
library's FNV-1a, what nibble-train's GPT uses), never by Python's hash(), which is salted per process: the same
layer rounds alike in every process (whatever PYTHONHASHSEED) and on every tensor-parallel rank."""
import os
import subprocess
import sys
import textwrap

import torch

import nibble
from mpi_run import check, needs_mpirun, run_ranks

# Forward + backward of an nvfp4 Linear (stochastically rounded gradients) built without a seed; prints a digest
# of the weight gradient's bits.
GRAD_DIGEST = """
import hashlib, torch, nibble
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
lin = nibble.nn.Linear(64, 32, recipe="nvfp4", name="probe")
with torch.no_grad():
    lin.weight.copy_(torch.randn(32, 64, generator=g))
x = torch.randn(48, 64, generator=g)
lin(x).backward(torch.randn(48, 32, generator=g))
print(lin.seed, hashlib.sha256(lin.weight.grad.numpy().tobytes()).hexdigest())
"""


def test_a_layer_without_a_seed_is_keyed_by_its_name():
    lin = nibble.nn.Linear(64, 32, recipe="nvfp4", name="blocks.0.qkv")
    assert lin.seed == nibble.nn.layer_seed("blocks.0.qkv")
    assert nibble.nn.layer_seed("blocks.0.qkv") != nibble.nn.layer_seed("blocks.0.out")
    assert nibble.nn.layer_seed("a", 1) != nibble.nn.layer_seed("a", 2)  # nibble-train's model.seed mixes in
    assert nibble.nn.Linear(64, 32, name="x", seed=5).seed == 5  # an explicit seed wins


def test_the_same_layer_rounds_alike_in_processes_with_different_hash_salts():
    package = os.path.dirname(os.path.dirname(os.path.abspath(nibble.__file__)))
    outs = []
    for salt in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=salt,
                   PYTHONPATH=os.pathsep.join([package, os.environ.get("PYTHONPATH", "")]))
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(GRAD_DIGEST)], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.strip())
    assert outs[0] == outs[1], outs


TP_SCRIPT = r"""
import torch, nibble
torch.set_num_threads(1)
P, TP, C = nibble.parallel, nibble.tensor_parallel, nibble._C
rt = P.init(deadline=20.0)
r, n = rt.rank, rt.world_size
g = P.Mesh(tp=n).tp
T, H, N = 32, 64, 32 * n
gen = torch.Generator().manual_seed(3)
xf, wf, dyf = torch.randn(T, H, generator=gen), torch.randn(N, H, generator=gen), torch.randn(T, N, generator=gen)
for q in range(n):  # as in test_tensor_parallel.py: every shard's dy has the same amax, RHT'd amax included
    dyf[:16, q * (N // n)] = 0.0
    dyf[q, q * (N // n)] = 36.0
# Built without a seed on every rank: each shard must draw the bits the whole single-rank layer draws.
col = TP.ColumnParallelLinear(H, N, g, recipe="nvfp4", name="probe")
col.load_full(wf)
x = xf.clone().requires_grad_()
col(x).backward(dyf[:, r * (N // n):(r + 1) * (N // n)])
ref = nibble.nn.Linear(H, N, recipe="nvfp4", name="probe")
with torch.no_grad():
    ref.weight.copy_(wf)
ref(xf.clone().requires_grad_()).backward(dyf)  # with a dgrad, as the tp layer (the same SR counters)
assert col.seed == ref.seed == nibble.nn.layer_seed("probe"), (col.seed, ref.seed)
want = ref.weight.grad[r * (N // n):(r + 1) * (N // n)]
assert torch.equal(col.weight.grad, want), ("wgrad shard differs from the single-rank layer's",
                                            (col.weight.grad - want).abs().max().item())
print(f"OK rank {r}", flush=True)
"""


@needs_mpirun
def test_a_tensor_parallel_layer_without_a_seed_rounds_as_the_single_rank_layer():
    check(run_ranks(TP_SCRIPT, np=2))
