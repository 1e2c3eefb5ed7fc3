"""Context parallel attention (nibble.context_parallel): ring attention and Ulysses on 2 and 4 MPI ranks against
full-sequence causal attention (torch SDPA, FP64, torch autograd for the input gradients), GQA, bfloat16, the
load-balanced split, and the errors for lengths and head counts that do not divide."""
import pytest
import torch

import nibble
from mpi_run import check, needs_mpirun, run_ranks

CP = nibble.context_parallel


def test_split_merge_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 16 * 2, dtype=torch.float64).view(2, 3, 16, 2)
    for cp in (1, 2, 4):
        parts = [CP.split_for_rank(x, cp, r) for r in range(cp)]
        torch.testing.assert_close(CP.merge_gathered(torch.cat(parts, 2), cp), x, rtol=0, atol=0)
    # cp=2: 4 chunks of 4 tokens; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2 (Megatron's balance).
    positions = torch.arange(16)
    assert CP.split_for_rank(positions, 2, 0, dim=0).tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert CP.split_for_rank(positions, 2, 1, dim=0).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]


def test_split_rejects_lengths_not_a_multiple_of_2cp():
    x = torch.zeros(1, 2, 18, 4)
    with pytest.raises(ValueError, match=r"sequence length 18 is not a multiple of 2\*cp = 8.*use 16 or 24"):
        CP.split_for_rank(x, 4, 0)
    with pytest.raises(ValueError, match=r"rank 4 is outside"):
        CP.split_for_rank(torch.zeros(1, 2, 16, 4), 4, 4)


# Each rank: the same full q, k, v (fixed seed), the reference from torch SDPA (FP64, causal) and torch autograd,
# its own part through ring/Ulysses, and a comparison of output and input gradients with the reference's part.
# One mpirun per rank count runs every case (starting torch on oversubscribed ranks dominates the time).
SCRIPT = r"""
import torch, nibble
torch.set_num_threads(1)
P, CP = nibble.parallel, nibble.context_parallel
rt = P.init(deadline=60)
g = P.Mesh(cp=rt.world_size).cp
CASES = CASES_HERE

def run_case(method, H, HKV, S, dtype, tol, B=2, D=8):
    gen = torch.Generator().manual_seed(1234 + H + S)
    q, k, v, dout = (torch.randn(B, h, S, D, generator=gen, dtype=torch.float64) for h in (H, HKV, HKV, H))
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_inputs, is_causal=True, enable_gqa=HKV != H)
    ref.backward(dout)
    local = [CP.split(t, g).to(dtype).requires_grad_() for t in (q, k, v)]
    out = getattr(CP, method)(*local, g)
    out.backward(CP.split(dout, g).to(dtype))
    def close(name, got, want):
        err = (got.double() - want).abs().max().item() / want.abs().max().item()
        assert err <= tol, f"rank {rt.rank} {method} H={H} Hkv={HKV} {dtype} {name}: relative error {err:.3g} > {tol}"
    close("output", out, CP.split(ref.detach(), g))
    for name, t, r in zip("qkv", local, ref_inputs):
        close("d" + name, t.grad, CP.split(r.grad, g))
    # merge() gathers the full output back in natural order.
    close("merged output", CP.merge(out.detach(), g), ref.detach())

for case in CASES:
    run_case(*case)
print(f"OK rank {rt.rank}", flush=True)
"""

F64 = "torch.float64"


@needs_mpirun
@pytest.mark.parametrize("np", [2, 4])
def test_ring_and_ulysses_match_full_causal_attention(np):
    cases = [("ring_attention", 4, 4, 32, F64, 1e-5), ("ulysses_attention", 4, 4, 32, F64, 1e-5),
             # GQA: 8 query heads over 4 kv heads
             ("ring_attention", 8, 4, 16, F64, 1e-5), ("ulysses_attention", 8, 4, 16, F64, 1e-5)]
    if np == 2:
        # bfloat16 inputs (FP32 math and merge): within bfloat16 rounding of the FP64 reference.
        cases += [("ring_attention", 4, 4, 32, "torch.bfloat16", 2e-2),
                  ("ulysses_attention", 4, 4, 32, "torch.bfloat16", 2e-2)]
    listed = "[" + ", ".join(f"({m!r}, {h}, {kv}, {s}, {d}, {t})" for m, h, kv, s, d, t in cases) + "]"
    check(run_ranks(SCRIPT.replace("CASES_HERE", listed), np=np, timeout=240), np=np)


ERRORS = r"""
import torch, nibble
P, CP = nibble.parallel, nibble.context_parallel
rt = P.init(deadline=60)
g = P.Mesh(cp=rt.world_size).cp
def expect(fn, text):
    try:
        fn()
    except ValueError as e:
        assert text in str(e), str(e)
    else:
        raise AssertionError("no error for " + text)
x = torch.zeros(1, 4, 8, 4, dtype=torch.float64)
expect(lambda: CP.split(torch.zeros(1, 4, 18, 4), g), "sequence length 18 is not a multiple of 2*cp = 4")
expect(lambda: CP.ulysses_attention(torch.zeros(1, 3, 8, 4), torch.zeros(1, 3, 8, 4), torch.zeros(1, 3, 8, 4), g),
       "heads = 3 is not divisible by the cp size 2")
expect(lambda: CP.ulysses_attention(x, torch.zeros(1, 1, 8, 4, dtype=torch.float64),
                                    torch.zeros(1, 1, 8, 4, dtype=torch.float64), g),
       "kv heads = 1 is not divisible by the cp size 2")
expect(lambda: CP.ring_attention(torch.zeros(1, 4, 7, 4), torch.zeros(1, 4, 7, 4), torch.zeros(1, 4, 7, 4), g),
       "the local sequence has 7 tokens")
expect(lambda: CP.ring_attention(x, torch.zeros(1, 3, 8, 4, dtype=torch.float64),
                                 torch.zeros(1, 3, 8, 4, dtype=torch.float64), g), "kv heads = 3 must divide heads = 4")
# The group still works after the rejected calls (nothing was sent).
q = torch.randn(1, 4, 8, 4, dtype=torch.float64)
CP.ring_attention(q, q, q, g)
print(f"OK rank {rt.rank}", flush=True)
"""


@needs_mpirun
def test_errors_before_communication():
    check(run_ranks(ERRORS, np=2, timeout=120), np=2)
