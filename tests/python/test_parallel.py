"""nibble.parallel: import does not start MPI; under `mpirun -np 2` (subprocesses) the collectives on torch
tensors match hand-computed results, the mesh has the expected groups, validation fails before allocation,
and a rank that skips a collective makes the other fail within the deadline with a message naming group, op,
rank and step (and both ranks still exit cleanly)."""
import pytest

import nibble
from mpi_run import check, needs_mpirun, run_ranks


def test_import_does_not_initialise_mpi():
    assert not nibble.parallel.is_initialized()
    with pytest.raises(RuntimeError, match="not initialised"):
        nibble.parallel.world().rank


def test_validation_without_mpi():
    nibble.parallel.validate_mesh(tp=2, dp=2, world_size=4, model=dict(num_heads=8, hidden=64))
    with pytest.raises(ValueError, match="tp=3 does not divide num_heads=8"):
        nibble.parallel.validate_mesh(tp=3, world_size=3, model=dict(num_heads=8))
    with pytest.raises(ValueError, match=r"2\*1\*3\*1 = 6 does not equal the world size 4"):
        nibble.parallel.validate_mesh(tp=2, dp=3, world_size=4)
    with pytest.raises(ValueError, match="unknown model key 'heads'"):
        nibble.parallel.validate_mesh(world_size=1, model=dict(heads=8))
    assert nibble.parallel.group_members("dp", 5, tp=2, dp=2, pp=2) == [5, 7]
    assert nibble.parallel.group_members("tp_dp_cp", 1, tp=2, cp=2, dp=2) == list(range(8))


COLLECTIVES = r"""
import torch, nibble
P = nibble.parallel
assert not P.is_initialized()
rt = P.init(deadline=10.0)
assert P.init() is rt and P.is_initialized()
r, n = rt.rank, rt.world_size
assert n == 2 and rt.local_rank == r and rt.launcher == "openmpi", rt

# all_reduce: sum / max / avg over several dtypes, in place and zero-copy
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int32, torch.int64, torch.uint8):
    t = torch.arange(10).to(dtype) + 3 * (r + 1)
    ptr = t.data_ptr()
    P.all_reduce(t)
    assert t.data_ptr() == ptr
    assert torch.equal(t, (2 * torch.arange(10) + 9).to(dtype)), (dtype, t)
    m = P.all_reduce(torch.full((5,), r, dtype=dtype), op="max")
    assert torch.equal(m, torch.full((5,), 1, dtype=dtype))
a = P.all_reduce(torch.tensor([1.0, 3.0]) * (r + 1), op="avg")
assert torch.equal(a, torch.tensor([1.5, 4.5])), a
try:
    P.all_reduce(torch.ones(3, dtype=torch.int32), op="avg")
    raise SystemExit("avg of int32 accepted")
except ValueError as e:
    assert "avg of int32 is not defined" in str(e)
try:
    P.all_reduce(torch.ones(3, dtype=torch.float16))
    raise SystemExit("float16 accepted")
except TypeError as e:
    assert "supported: torch.float32" in str(e)

# a non-contiguous tensor goes through a copy and is written back
nc = (torch.arange(12, dtype=torch.float32).reshape(3, 4) * (r + 1)).t()
assert not nc.is_contiguous()
P.all_reduce(nc)
assert torch.equal(nc, (torch.arange(12, dtype=torch.float32).reshape(3, 4) * 3).t())

# all_gather along dim 0: equal and uneven rows
g = P.all_gather(torch.full((2, 3), r, dtype=torch.int64))
assert torch.equal(g, torch.tensor([[0] * 3, [0] * 3, [1] * 3, [1] * 3]))
counts = [1, 3]
ug = P.all_gather(torch.full((counts[r], 2), 10 + r, dtype=torch.float32), counts=counts)
assert torch.equal(ug, torch.tensor([[10.0, 10.0]] + [[11.0, 11.0]] * 3)), ug

# reduce_scatter along dim 0: equal and uneven rows
x = torch.arange(8, dtype=torch.float64).reshape(4, 2) + r
rs = P.reduce_scatter(x)
assert torch.equal(rs, (2 * torch.arange(8, dtype=torch.float64).reshape(4, 2) + 1)[2 * r:2 * r + 2]), rs
urs = P.reduce_scatter(torch.ones(5, 3, dtype=torch.bfloat16), op="sum", counts=[4, 1])
assert urs.shape == (4 - 3 * r, 3) and bool((urs == 2).all()), urs

# broadcast, all_to_all, send/recv
b = P.broadcast(torch.full((4,), 7 if r == 1 else 0, dtype=torch.uint8), root=1)
assert torch.equal(b, torch.full((4,), 7, dtype=torch.uint8))
w = P.world()
aa = w.all_to_all(torch.tensor([[10 * r + 0], [10 * r + 1]], dtype=torch.int32))
assert torch.equal(aa, torch.tensor([[r], [10 + r]], dtype=torch.int32)), aa
got = w.send_recv(torch.full((3,), float(r)), (r + 1) % n, torch.empty(3), (r + 1) % n)
assert torch.equal(got, torch.full((3,), float(1 - r)))
P.barrier()

# the mesh: groups as the layout arithmetic says, usable, and validated before anything is allocated
mesh = P.Mesh(tp=2, model=dict(num_heads=4, hidden=64, vocab=128))
assert mesh.shape == (2, 1, 1, 1) and mesh.coord == (r, 0, 0, 0)
assert mesh.tp.members == [0, 1] and mesh.tp.rank == r and mesh.dp.members == [r]
assert mesh.tp_dp_cp.size == 2 and mesh.pp.size == 1
s = mesh.tp.all_reduce(torch.tensor([float(r + 1)]))
assert s.item() == 3.0
mesh.dp.deadline = 2.5
assert mesh.dp.deadline == 2.5
for bad, message in ((dict(tp=3), "does not equal the world size 2"),
                     (dict(tp=2, model=dict(num_heads=3)), "tp=2 does not divide num_heads=3")):
    try:
        P.Mesh(**bad)
        raise SystemExit(f"{bad} accepted")
    except ValueError as e:
        assert message in str(e), str(e)
print(f"OK rank {r}", flush=True)
"""


@needs_mpirun
def test_collectives_and_mesh_on_two_ranks():
    check(run_ranks(COLLECTIVES))


FAULT = r"""
import time, torch, nibble
P = nibble.parallel
rt = P.init(deadline=10.0)
mesh = P.Mesh(dp=2, deadline=1.0)
P.set_step(5)
if rt.rank == 0:
    start = time.monotonic()
    try:
        mesh.dp.all_reduce(torch.ones(16))
        raise SystemExit("all_reduce completed although rank 1 never called it")
    except RuntimeError as e:
        waited = time.monotonic() - start
        message = str(e)
    assert 1.0 <= waited < 4.0, waited
    for part in ("all_reduce timed out on group 'dp' (world ranks [0, 1])", "at step 5",
                 "world rank 0 (rank 0 of 2 in 'dp')", "sum of 16 float32"):
        assert part in message, message
    assert mesh.dp.failed
    print("fault message:", message, flush=True)
P.barrier()  # both ranks carry on
print(f"OK rank {rt.rank}", flush=True)
"""


@needs_mpirun
def test_a_skipped_collective_fails_within_the_deadline():
    result = run_ranks(FAULT)
    check(result)
    assert "all_reduce timed out on group 'dp'" in result.stdout
