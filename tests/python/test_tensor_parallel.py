"""nibble.tensor_parallel under `mpirun -np 2` and `-np 4` (one job per size, all checks in it).

Oracles are single-rank computations nobody here wrote for TP: torch ops for the regions, the embedding and the
cross-entropy; nibble's own single-rank Linear (nibble._C.linear) with the full weights for the TP/SP Linears and
the TP+SP transformer block. Per-tensor factors are max-reduced over the TP group, so the TP forward quantizes
exactly as the single rank does (bit-identical outputs). Where each rank's gradient shard is a tensor of its
own (the column Linear's output gradient) the shards are built to share their amax ("the same scales"); the
stochastic-rounding bits of a shard are those of its elements in the whole tensor (precision::SrIndexMap), so
the full single-rank Linear is the oracle for every gradient, stochastically rounded ones included.
"""
import pytest

from mpi_run import check, needs_mpirun, run_ranks

SCRIPT = r"""
import torch, torch.nn.functional as F, nibble
torch.set_num_threads(1)
P, TP, C = nibble.parallel, nibble.tensor_parallel, nibble._C
rt = P.init(deadline=20.0)  # a failing rank makes its peers fail fast
r, n = rt.rank, rt.world_size
mesh = P.Mesh(tp=n)
g = mesh.tp

def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()

def same(a, b, what):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert torch.equal(a, b), (what, "not bit-identical, rel", rel(a, b))

def close(a, b, tol, what):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    e = rel(a, b)
    assert e <= tol, (what, e, tol)

def randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

# ---- regions: forward collective and backward conjugate against torch ops on every rank's data ----
xs = [randn(10 + q, 4 * n, 3) for q in range(n)]   # rank q's tensor (every rank can build all of them)
gys = [randn(20 + q, 4 * n, 3) for q in range(n)]
x = xs[r].clone().requires_grad_()
y = TP.copy_to_tensor_parallel(x, g); same(y, xs[r], "copy_to forward"); y.backward(gys[r])
close(x.grad, sum(gys), 1e-6, "copy_to backward (all-reduce)")
x = xs[r].clone().requires_grad_()
y = TP.reduce_from_tensor_parallel(x, g); close(y, sum(xs), 1e-6, "reduce_from forward"); y.backward(gys[r])
same(x.grad, gys[r], "reduce_from backward (identity)")
x = xs[0].clone().requires_grad_()
y = TP.scatter_to_sequence_parallel(x, g); same(y, xs[0].chunk(n)[r], "scatter forward")
y.backward(gys[r].chunk(n)[0]); same(x.grad, torch.cat([gq.chunk(n)[0] for gq in gys]), "scatter backward (all-gather)")
for partial in (True, False):
    x = xs[r].chunk(n)[0].clone().requires_grad_()
    y = TP.gather_from_sequence_parallel(x, g, grad_is_partial=partial)
    same(y, torch.cat([xq.chunk(n)[0] for xq in xs]), "gather forward")
    y.backward(gys[r])
    want = sum(gq.chunk(n)[r] for gq in gys) if partial else gys[r].chunk(n)[r]
    close(x.grad, want, 1e-6, f"gather backward (partial={partial})")
x = xs[r].clone().requires_grad_()
y = TP.reduce_scatter_to_sequence_parallel(x, g); close(y, sum(xs).chunk(n)[r], 1e-6, "reduce_scatter forward")
y.backward(gys[r].chunk(n)[0]); same(x.grad, torch.cat([gq.chunk(n)[0] for gq in gys]), "reduce_scatter backward")

# ---- column / row parallel Linear vs nibble's single-rank Linear, every recipe, with and without SP ----
T, H, N = 32 * n, 32 * n, 32 * n   # 32 tokens and 32 features per rank: whole MX/NVFP4 blocks per shard
sl = lambda size: slice(r * (size // n), (r + 1) * (size // n))

def single(recipe, name, seed, x, w, b, dy):
    # nibble's single-rank Linear: output and gradients
    x = x.clone().requires_grad_(); w = w.clone().requires_grad_()
    b = None if b is None else b.clone().requires_grad_()
    y = C.linear(x, w, b, C.LinearState(recipe, name, seed)); y.backward(dy)
    return y.detach(), x.grad, w.grad, None if b is None else b.grad

# The NVFP4 path with round-to-nearest gradients (the preset's are stochastically rounded).
nvfp4_rne = nibble.Recipe.custom("nvfp4_rne_grads", "nvfp4", None, "nvfp4", None, "rne")

def dy_gather_bytes(recipe, rows, cols):
    # What the SP row Linear's backward hands to collectives for its float32 output gradient [rows, cols] (this
    # rank's tokens): the gradient itself where its quantization cannot be gathered exactly (bf16: none), else
    # the quantized copies plus one all-reduce(max) of float32: the group amaxes the per-tensor factors need
    # (one per copy with a current per-tensor factor; nvfp4's RHT'd columnwise copy is a second quantization
    # with its own amax after the transform) and a NaN flag (alone for mxfp8 and the delayed FP8 scale).
    # Copies: per-tensor FP8 sends only its codes (the columnwise copy is their transpose); MXFP8 / NVFP4 send
    # both copies' codes and block scales (1 byte per 32 / 16 elements).
    e = rows * cols
    return {"bf16": 4 * e, "nvfp4": 2 * (e // 2 + e // 16) + 12, "fp8_current": e + 8, "fp8_delayed": e + 4,
            "mxfp8": 2 * (e + e // 32) + 4, "nvfp4_rne_grads": 2 * (e // 2 + e // 16) + 8,
            "mxfp4_quartet": 4 * e}[recipe]  # Quartet quantizes the rotated gradient: gathered as it is

recipe_names = ("bf16", "fp8_current", "fp8_delayed", "mxfp8", "nvfp4", "mxfp4_quartet")
for rec in [nibble.Recipe(name) for name in recipe_names] + [nvfp4_rne]:
    recipe = rec.name
    for sp in (False, True):
        tag = f"{recipe} sp={sp}"
        # Column: x random (under SP its shards have different amaxes: the group amax makes them agree);
        # W rows and dy columns get one planted maximum per shard, so every shard has the same amax.
        xf, wf, bf, dyf = randn(1, T, H), randn(2, N, H), randn(3, N), randn(4, T, N)
        for q in range(n):
            wf[q * (N // n), q] = 8.0  # above any randn value: every shard's amax is 8
            # dy: rowwise amax 36 on every shard; the column holding it is otherwise zero in its first 16-token
            # group, so the 16-point RHT maps it to exactly +-9, the largest RHT'd value of every shard (nvfp4)
            dyf[:16, q * (N // n)] = 0.0
            dyf[q, q * (N // n)] = 36.0
        col = TP.ColumnParallelLinear(H, N, g, sequence_parallel=sp, bias=True, recipe=rec, name="col", seed=7)
        col.load_full(wf, bf)
        xin = (xf.chunk(n)[r] if sp else xf).clone().requires_grad_()
        y = col(xin)
        y_full = single(rec, "col", 7, xf, wf, bf, torch.zeros(T, N))[0]
        same(y, y_full[:, sl(N)], f"column forward {tag} vs the full single-rank Linear")
        y.backward(dyf[:, sl(N)])
        # Each element of the shard's output gradient rounds (stochastically too) with its bits in the whole
        # tensor, so the full single-rank Linear is the oracle: wgrad and bias grad bit for bit, dgrad up to the
        # order of the sum over the output features (split across the ranks).
        yb, dxb, dwb, dbb = single(rec, "col", 7, xf, wf, bf, dyf)
        same(col.weight.grad, dwb[sl(N)], f"column wgrad {tag}")
        same(col.bias.grad, dbb[sl(N)], f"column bias grad {tag}")
        close(xin.grad, dxb.chunk(n)[r] if sp else dxb, 1e-5 if recipe == "bf16" else 1e-6, f"column dgrad {tag}")

        # Row: W random (shards with different amaxes: the group amax makes them agree); the output gradient is
        # replicated (or all-gathered under SP), so the full single-rank Linear is the oracle for everything.
        xf, wf, bf, dyf = randn(5, T, H), randn(6, N, H), randn(7, N), randn(8, T, N)
        row = TP.RowParallelLinear(H, N, g, sequence_parallel=sp, bias=True, recipe=rec, name="row", seed=9)
        row.load_full(wf, bf)
        xin = xf[:, sl(H)].clone().requires_grad_()
        y = row(xin)
        y_ref, dx_ref, dw_ref, db_ref = single(rec, "row", 9, xf, wf, bf, dyf)
        close(y, y_ref.chunk(n)[r] if sp else y_ref, 1e-6, f"row forward {tag}")
        TP.reset_communicated_bytes()
        y.backward(dyf.chunk(n)[r] if sp else dyf)
        moved = TP.communicated_bytes()
        # Under SP the output gradient is gathered (quantized where exact: FP8 codes, 1 byte an element instead
        # of 4); without SP the row Linear's backward communicates nothing.
        want = dy_gather_bytes(recipe, T // n, N) if sp and n > 1 else 0
        assert moved == want, (f"row backward bytes {tag}", moved, want)
        same(xin.grad, dx_ref[:, sl(H)], f"row dgrad {tag}")
        same(row.weight.grad, dw_ref[:, sl(H)], f"row wgrad {tag}")
        if sp:
            TP.all_reduce_replicated_grads(row.replicated_parameters(), g)
        close(row.bias.grad, db_ref, 1e-6, f"row bias grad {tag}")

# ---- vocab-parallel embedding and cross-entropy vs torch ----
V, E, Tt = 8 * n, 16, 8 * n
table = randn(30, V, E)
tokens = torch.randint(0, V, (Tt,), generator=torch.Generator().manual_seed(31))
gy = randn(32, Tt, E)
ref_w = table.clone().requires_grad_(); ref = F.embedding(tokens, ref_w); ref.backward(gy)
for sp in (False, True):
    emb = TP.VocabParallelEmbedding(V, E, g, sequence_parallel=sp).load_full(table)
    out = emb(tokens)
    same(out, ref.detach().chunk(n)[r] if sp else ref.detach(), f"embedding forward sp={sp}")
    out.backward(gy.chunk(n)[r] if sp else gy)
    close(emb.weight.grad, ref_w.grad[sl(V)], 1e-6, f"embedding wgrad sp={sp}")
try:
    emb(torch.tensor([V]))
    raise SystemExit("out-of-vocabulary id accepted")
except ValueError as e:
    assert f"token id {V} is outside the vocabulary [0, {V})" in str(e), e
logits = randn(33, Tt, V) * 4
targets = torch.randint(0, V, (Tt,), generator=torch.Generator().manual_seed(34))
targets[::3] = -100
ref_l = logits.double().clone().requires_grad_()
ref_loss = F.cross_entropy(ref_l, targets, ignore_index=-100); ref_loss.backward()
shard = logits[:, sl(V)].clone().requires_grad_()
loss = TP.vocab_parallel_cross_entropy(shard, targets, g)
close(loss, ref_loss, 1e-6, "cross-entropy loss")
loss.backward()
close(shard.grad, ref_l.grad[:, sl(V)], 1e-6, "cross-entropy grad")

# ---- TP+SP transformer block vs the single-rank block ----
heads, S = 2 * n, 32 * n
Hd = H // heads
def block(h, p, linear, norm_weights, rows):
    # RMSNorm -> QKV -> causal attention -> out -> residual; RMSNorm -> gate/up -> SwiGLU -> down -> residual
    comp = p["compress"]
    a = C.rms_norm(h, norm_weights[0], 1e-6, comp, "norm1")
    # Per head q, k, v (nibble's GPT layout): a rank's heads are one contiguous slice of the QKV output.
    qkv = linear("qkv", a).reshape(rows, -1, 3, Hd)
    q, k, v = (qkv[:, :, i].transpose(0, 1) for i in range(3))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1).reshape(rows, -1)
    h2 = h + linear("out", o)
    b = C.rms_norm(h2, norm_weights[1], 1e-6, comp, "norm2")
    return h2 + linear("down", C.swiglu(linear("gate", b), linear("up", b), comp, "swiglu"))

Ff = 2 * H
full = {"qkv": randn(40, 3 * H, H) / H ** 0.5, "out": randn(41, H, H) / H ** 0.5, "gate": randn(42, Ff, H) / H ** 0.5,
        "up": randn(43, Ff, H) / H ** 0.5, "down": randn(44, H, Ff) / Ff ** 0.5}
norms = [1 + 0.1 * randn(45, H), 1 + 0.1 * randn(46, H)]
hf, gout = randn(47, S, H), randn(48, S, H)
# Tolerances: the TP block differs from the single-rank one only in the summation order of the reductions (row
# Linear partial sums, reduce-scattered dgrads, the SP norm-weight gradients: ~1e-7; measured <= 3.4e-6 for
# bf16, whose BF16 operand rounding can turn such a difference into a single-element flip), and stochastically
# rounded gradients draw, per element, the bits the single-rank block draws (the QKV output is laid out per head,
# as in nibble's GPT, so a rank's heads are one slice of it): every preset is held to 1e-5. With FP64
# accumulation (the recipe's reproducible_sums: split sums added exactly, rounded once) everything but the SP
# norm-weight gradients is bit-identical (measured 0 for bf16 and nvfp4).
for rec, tol_out, tol_grad, fp64 in ((nibble.Recipe("bf16"), 1e-5, 1e-5, False),
                                     (nibble.Recipe("bf16"), 1e-5, 1e-5, True),
                                     (nibble.Recipe("fp8_current"), 1e-5, 1e-5, False),
                                     (nibble.Recipe("mxfp8"), 1e-5, 1e-5, False),
                                     (nibble.Recipe("nvfp4"), 1e-5, 1e-5, False),
                                     (nibble.Recipe("nvfp4"), 1e-5, 1e-5, True),
                                     (nvfp4_rne, 1e-5, 1e-5, False),
                                     (nibble.Recipe("mxfp4_quartet"), 1e-5, 1e-5, False)):
    if fp64:
        rec = nibble.Recipe(rec.name, reproducible_sums=True)
    recipe = rec.name + (" fp64 sums" if fp64 else "")
    p = {"compress": rec.compress_activations}
    ws = {k: w.clone().requires_grad_() for k, w in full.items()}
    nw = [w.clone().requires_grad_() for w in norms]
    states = {k: C.LinearState(rec, k, 11 + i) for i, k in enumerate(full)}
    h = hf.clone().requires_grad_()
    out_ref = block(h, p, lambda k, x: C.linear(x, ws[k], None, states[k]), nw, S)
    out_ref.backward(gout)

    mods = {"qkv": TP.ColumnParallelLinear(H, 3 * H, g, sequence_parallel=True, recipe=rec, name="qkv", seed=11).load_full(full["qkv"]),
            "out": TP.RowParallelLinear(H, H, g, sequence_parallel=True, recipe=rec, name="out", seed=12).load_full(full["out"]),
            "gate": TP.ColumnParallelLinear(H, Ff, g, sequence_parallel=True, recipe=rec, name="gate", seed=13).load_full(full["gate"]),
            "up": TP.ColumnParallelLinear(H, Ff, g, sequence_parallel=True, recipe=rec, name="up", seed=14).load_full(full["up"]),
            "down": TP.RowParallelLinear(Ff, H, g, sequence_parallel=True, recipe=rec, name="down", seed=15).load_full(full["down"])}
    nl = [w.clone().requires_grad_() for w in norms]
    hl = hf.chunk(n)[r].clone().requires_grad_()
    # attention runs on all S tokens (the column Linear gathered them) and this rank's heads
    out = block(hl, p, lambda k, x: mods[k](x), nl, S)  # rows = S for the attention; the norms see S/n tokens
    errs = {"forward": rel(out, out_ref.detach().chunk(n)[r])}
    out.backward(gout.chunk(n)[r])
    TP.all_reduce_replicated_grads(nl, g)
    errs["dx"] = rel(hl.grad, h.grad.chunk(n)[r])
    for i in range(2):
        errs[f"norm{i + 1} grad"] = rel(nl[i].grad, nw[i].grad)
    for k in ("out", "down"):
        errs[f"{k} wgrad"] = rel(mods[k].weight.grad, ws[k].grad[:, sl(ws[k].shape[1])])
    for k in ("gate", "up"):
        errs[f"{k} wgrad"] = rel(mods[k].weight.grad, ws[k].grad[sl(ws[k].shape[0])])
    errs["qkv wgrad"] = rel(mods["qkv"].weight.grad, ws["qkv"].grad[sl(3 * H)])
    print(f"rank {r} block {recipe}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()), flush=True)
    for k, v in errs.items():
        assert v <= (tol_out if k == "forward" else tol_grad), (f"block {k} {recipe}", v)
        if fp64 and "norm" not in k:
            assert v == 0, (f"block {k} {recipe}: not bit-identical under FP64 sums", v)

# ---- unsupported recipes and bad shapes fail on the calling rank with the reason ----
if n > 1:
    try:
        TP.RowParallelLinear(16 * n, N, g, recipe="mxfp4_quartet", name="bad")(torch.zeros(T, 16))
        raise SystemExit("mxfp4_quartet accepted a row shard of 16 input features")
    except ValueError as e:
        assert "in_features = 16, not a multiple of 32" in str(e) and "in_features/tp divisible by 32" in str(e), e
try:
    TP.ColumnParallelLinear(H, 3 * n + 1 if n > 1 else 3, g)
    raise SystemExit("indivisible out_features accepted")
except ValueError as e:
    assert "not divisible by the tensor-parallel size" in str(e), e
print(f"OK rank {r}", flush=True)
"""


@needs_mpirun
@pytest.mark.parametrize("np_", [2, 4])
def test_tensor_and_sequence_parallel(np_):
    check(run_ranks(SCRIPT, np=np_, timeout=300.0), np=np_)
