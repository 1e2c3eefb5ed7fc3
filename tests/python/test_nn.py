"""nibble.nn: Linear under every recipe (exact against FP64 on the quantized operands the layer used, and
within NUMERICS.md's sanity bounds of the unquantized layer), training, compressed activations, memory,
recipes, autocast, delayed scaling, the weight cache, and errors that name the layer."""
import pytest
import torch

import nibble
from nibble import _C

PRESETS = nibble.recipes
QUANTIZED = [r for r in PRESETS if r != "bf16"]
# Relative Frobenius error of the output against the exact FP64 layer: NUMERICS.md's sanity bounds
# (E4M3 rtol 0.125; E5M2/E2M1 0.25), the looser one for recipes with 4-bit operands.
SANITY = {"bf16": 0.01, "fp8_delayed": 0.125, "fp8_current": 0.125, "fp8_block": 0.125, "mxfp8": 0.125,
          "nvfp4": 0.25, "mxfp4": 0.25, "mxfp4_quartet": 0.25}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def deq(copy_tuple):
    data, scale, amax, rows, cols, scheme, fmt = copy_tuple
    return _C.dequantize(data, scale, amax, rows, cols, scheme, fmt).double()


def quest_mask(t):
    return nibble.quantize(t.detach(), "mxfp4_quest").mask.float()


def run_captured(recipe, m=64, k=96, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nibble.nn.Linear(k, n, bias=True, recipe=recipe, name=f"test_{recipe}")
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * 0.1)
        lin.bias.copy_(torch.randn(n, generator=g))
    state = lin.state_for(lin.active_recipe())
    state.capture = True
    x = torch.randn(m, k, generator=g, requires_grad=True)
    y = lin(x)
    dy = torch.randn(m, n, generator=g)
    y.backward(dy)
    return lin, x, y, dy, state.captured()


@pytest.mark.parametrize("recipe", PRESETS)
def test_linear_equals_fp64_on_the_operands_it_used(recipe):
    lin, x, y, dy, cap = run_captured(recipe)
    spec = nibble.Recipe(recipe).describe()
    hp = lambda t: t.detach().bfloat16().double()  # high-precision operands run as BF16
    xr = deq(cap["x_row"]) if spec["x_row"]["quantized"] else hp(x)
    wr = deq(cap["w_row"]) if spec["w_row"]["quantized"] else hp(lin.weight)
    assert rel(y.detach(), xr @ wr.T + lin.bias.detach().double()) <= 1e-5
    dyr = deq(cap["dy_row"]) if spec["dy_row"]["quantized"] else hp(dy)
    wc = deq(cap["w_col"]) if spec["w_col"]["quantized"] else hp(lin.weight).T
    dx_ref = dyr @ wc.T
    dyc = deq(cap["dy_col"]) if spec["dy_col"]["quantized"] else hp(dy).T
    xc = deq(cap["x_col"]) if spec["x_col"]["quantized"] else hp(x).T
    dw_ref = dyc @ xc.T
    if recipe == "mxfp4_quartet":
        # straight-through estimator: entries QuEST clipped get no gradient; the mask lives in the Hadamard
        # domain of the forward operands x_row and w_row
        ste = lambda grad, t: _C.hadamard32(_C.hadamard32(grad.float()) * quest_mask(t)).double()
        dx_ref, dw_ref = ste(dx_ref, x), ste(dw_ref, lin.weight)
    assert rel(x.grad, dx_ref) <= 1e-5
    assert rel(lin.weight.grad, dw_ref) <= 1e-5
    assert rel(lin.bias.grad, dy.double().sum(0)) <= 1e-6


@pytest.mark.parametrize("recipe", PRESETS)
def test_linear_is_within_the_sanity_bound_of_the_exact_layer(recipe):
    lin, x, y, dy, _ = run_captured(recipe, seed=1)
    xd, wd = x.detach().double(), lin.weight.detach().double()
    assert rel(y.detach(), xd @ wd.T + lin.bias.detach().double()) < SANITY[recipe]
    assert rel(x.grad, dy.double() @ wd) < 2 * SANITY[recipe]
    assert rel(lin.weight.grad, dy.double().T @ xd) < 2 * SANITY[recipe]


def train_mlp(recipe, steps=50):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    target = torch.sin(x @ torch.randn(32, 8, generator=g))
    with nibble.autocast(recipe):
        model = torch.nn.Sequential(nibble.nn.Linear(32, 64, bias=True), torch.nn.GELU(),
                                    nibble.nn.Linear(64, 64, bias=True), torch.nn.GELU(),
                                    nibble.nn.Linear(64, 8, bias=True))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nibble.nn.end_step(model)
        losses.append(loss.item())
    return losses


def test_every_preset_trains_a_three_layer_mlp_like_bf16():
    base = train_mlp("bf16")
    assert base[-1] < 0.5 * base[0]
    for recipe in QUANTIZED:
        losses = train_mlp(recipe)
        # 8-bit recipes track BF16 closely; 4-bit ones (noisier gradients at this tiny scale) still must cut the
        # loss by 40% and end within 2x of BF16's final loss.
        fp4 = recipe in ("nvfp4", "mxfp4", "mxfp4_quartet")
        assert losses[-1] < (0.6 if fp4 else 0.5) * losses[0], (recipe, losses[0], losses[-1])
        assert losses[-1] < (2.0 if fp4 else 1.15) * base[-1], (recipe, losses[-1], base[-1])


def block(recipe, x):
    """RMSNorm -> gate/up Linear -> SwiGLU -> down Linear, the MLP half of a transformer layer."""
    d, f = x.shape[-1], 2 * x.shape[-1]
    torch.manual_seed(0)
    norm = nibble.nn.RMSNorm(d, recipe=recipe)
    gate, up = nibble.nn.Linear(d, f, recipe=recipe), nibble.nn.Linear(d, f, recipe=recipe)
    down = nibble.nn.Linear(f, d, recipe=recipe)
    act = nibble.nn.SwiGLU(recipe=recipe)
    h = norm(x)
    return down(act(gate(h), up(h)))


@pytest.mark.parametrize("recipe", QUANTIZED)
def test_compressed_activations_cut_saved_bytes_by_40_percent(recipe):
    x = torch.randn(8, 32, 128).bfloat16().requires_grad_()
    with nibble.nn.measure_saved_bytes() as base:
        block("bf16", x)
    with nibble.nn.measure_saved_bytes() as ours:
        block(recipe, x)
    assert base.bytes > 0
    assert ours.bytes <= 0.6 * base.bytes, (recipe, ours.bytes, base.bytes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_gradient_equals_the_exact_op_at_the_saved_activation(dtype):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(6, 5, 64, generator=g) * 3).to(dtype).requires_grad_()
    w = torch.randn(64, generator=g).requires_grad_()
    dy = torch.randn(6, 5, 64, generator=g)
    y = _C.rms_norm(x, w, 1e-6, True, "norm")
    y.backward(dy.to(dtype))
    xq = nibble.quantize(x.detach(), "fp8_block16").dequantize().reshape(x.shape).double().requires_grad_()
    wd = w.detach().double().requires_grad_()
    ref = xq * torch.rsqrt(xq.pow(2).mean(-1, keepdim=True) + 1e-6) * wd
    ref.backward(dy.to(dtype).double())
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel(x.grad, xq.grad) <= tol
    assert rel(w.grad, wd.grad) <= 1e-5
    # forward is exact (nothing is quantized on the way forward)
    exact = x.detach().double()
    assert rel(y.detach(), exact * torch.rsqrt(exact.pow(2).mean(-1, keepdim=True) + 1e-6) * w.detach().double()) < (
        1e-6 if dtype == torch.float32 else 1e-2)


def test_swiglu_gradient_equals_the_exact_op_at_the_saved_activations():
    g = torch.Generator().manual_seed(8)
    gate = torch.randn(7, 96, generator=g).requires_grad_()
    up = torch.randn(7, 96, generator=g).requires_grad_()
    dy = torch.randn(7, 96, generator=g)
    _C.swiglu(gate, up, True, "act").backward(dy)
    gq = nibble.quantize(gate.detach(), "fp8_block16").dequantize().double().requires_grad_()
    uq = nibble.quantize(up.detach(), "fp8_block16").dequantize().double().requires_grad_()
    (torch.nn.functional.silu(gq) * uq).backward(dy.double())
    assert rel(gate.grad, gq.grad) <= 1e-5
    assert rel(up.grad, uq.grad) <= 1e-5
    # uncompressed: the plain op
    gate.grad = up.grad = None
    _C.swiglu(gate, up, False, "act").backward(dy)
    g64, u64 = gate.detach().double().requires_grad_(), up.detach().double().requires_grad_()
    (torch.nn.functional.silu(g64) * u64).backward(dy.double())
    assert rel(gate.grad, g64.grad) <= 1e-6


@pytest.mark.parametrize("shape", [(6, 5, 64), (3, 37), (256, 512)])
def test_rmsnorm_cpu_passes_are_bit_identical_to_the_torch_expressions(shape):
    # core/cpu/rms_norm_cpu.h: fused passes with the same FP32 operations in the same order as the torch
    # expressions they replaced, around torch's own row means, so equal to the bit.
    g = torch.Generator().manual_seed(10)
    x = (torch.randn(*shape, generator=g) * 3).requires_grad_()
    w = torch.randn(shape[-1], generator=g).requires_grad_()
    dy = torch.randn(*shape, generator=g)
    y = _C.rms_norm(x, w, 1e-6, False, "norm")
    y.backward(dy)
    xd, wd = x.detach(), w.detach()
    r = torch.rsqrt(xd.pow(2).mean(-1, True) + 1e-6)
    assert torch.equal(y.detach(), xd * r * wd)
    gw = dy * wd
    assert torch.equal(x.grad, r * gw - xd * r.pow(3) * (gw * xd).mean(-1, True))
    assert torch.equal(w.grad, (dy * xd * r).reshape(-1, shape[-1]).sum(0))


@pytest.mark.parametrize("shape", [(7, 96), (3, 37), (64, 1376)])
def test_swiglu_cpu_pass_is_bit_identical_to_the_torch_expression(shape):
    # core/cpu/swiglu_cpu.h: one pass with the same FP32 operations in the same order as the torch expression
    # it replaced, so equal to the bit (the largest shape takes the multi-threaded path).
    g = torch.Generator().manual_seed(9)
    gate = (torch.randn(*shape, generator=g) * 4).requires_grad_()
    up = torch.randn(*shape, generator=g).requires_grad_()
    dy = torch.randn(*shape, generator=g)
    y = _C.swiglu(gate, up, False, "act")
    y.backward(dy)
    gd, ud = gate.detach(), up.detach()
    sig = torch.sigmoid(gd)
    assert torch.equal(y.detach(), gd * sig * ud)
    assert torch.equal(gate.grad, dy * ud * sig * (1 + gd * (1 - sig)))
    assert torch.equal(up.grad, dy * gd * sig)


def test_autocast_chooses_the_recipe_for_modules_created_or_run_inside():
    with nibble.autocast("nvfp4"):
        made_inside = nibble.nn.Linear(32, 16)
    outside = nibble.nn.Linear(32, 16)
    explicit = nibble.nn.Linear(32, 16, recipe="mxfp8")
    assert made_inside.active_recipe().name == "nvfp4"
    assert outside.active_recipe().name == "bf16"
    with nibble.autocast("fp8_current"):
        assert outside.active_recipe().name == "fp8_current"
        assert made_inside.active_recipe().name == "fp8_current"
        assert explicit.active_recipe().name == "mxfp8"
    assert set(nibble.recipes) >= {"bf16", "fp8_delayed", "fp8_current", "fp8_block", "mxfp8", "nvfp4", "mxfp4",
                                   "mxfp4_quartet"}


def test_nvfp4_recipe_matches_the_documented_operand_table():
    d = nibble.Recipe("nvfp4").describe()
    assert d["x_row"]["scheme"] == "nvfp4" and not d["x_row"]["rht"]
    assert d["w_row"]["scheme"] == "nvfp4_2d" and d["w_col"]["scheme"] == "nvfp4_2d"
    assert d["x_col"]["rht"] and d["dy_col"]["rht"]
    assert d["dy_row"]["rounding"] == "stochastic" and d["dy_col"]["rounding"] == "stochastic"
    assert d["x_row"]["rounding"] == "rne"


def test_research_exmy_recipes_and_invalid_combinations():
    lin = nibble.nn.Linear(64, 32, recipe="exmy:e3m2")
    x = torch.randn(16, 64, requires_grad=True)
    lin(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="unknown recipe 'fp7'.*valid"):
        nibble.Recipe("fp7")
    with pytest.raises(ValueError, match="delayed scaling|RHT|e2m1|at most 8 bits"):
        nibble.Recipe("exmy:e5m6")
    with pytest.raises(ValueError, match="e2m1"):
        nibble.Recipe.custom("bad", "nvfp4", "e4m3")


def test_delayed_scaling_records_amaxes_and_updates_once_per_step():
    lin = nibble.nn.Linear(32, 16, recipe="fp8_delayed")
    state = lin.state_for(lin.active_recipe())
    x = torch.randn(8, 32) * 10
    lin(x).sum().backward()
    assert state.delayed_scales()["input"] == 1.0  # the first step uses the initial scale
    lin.end_step()
    scales = state.delayed_scales()
    assert scales["input"] == pytest.approx(448.0 / x.abs().max().item(), rel=1e-6)
    assert scales["weight"] == pytest.approx(448.0 / lin.weight.detach().abs().max().item(), rel=1e-6)
    assert scales["grad_output"] == pytest.approx(57344.0, rel=1e-6)  # dy = ones: amax 1, E5M2 max 57344


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1),
                                      lambda p: nibble.optim.AdamW(p, lr=0.1),
                                      lambda p: nibble.optim.SGD(p, lr=0.1)], ids=["torch.SGD", "nibble.AdamW", "nibble.SGD"])
def test_weight_is_quantized_once_per_step_and_refreshed_after_the_optimizer(make_opt):
    # nibble's optimizers write parameters through raw pointers: they must bump the version counter the weight
    # cache is keyed by, or every later forward would reuse the first step's quantized weight.
    lin = nibble.nn.Linear(32, 16, recipe="nvfp4")
    state = lin.state_for(lin.active_recipe())
    opt = make_opt(lin.parameters())
    for _ in range(3):  # three micro-batches of one step
        lin(torch.randn(16, 32)).sum().backward()
    assert state.weight_quantizations == 1
    opt.step()
    lin(torch.randn(16, 32)).sum().backward()
    assert state.weight_quantizations == 2


def test_linear_saves_no_high_precision_input_under_quantized_recipes():
    x = torch.randn(64, 128, requires_grad=True)
    for recipe, max_bytes_per_elem in [("fp8_current", 1.01), ("nvfp4", 0.57), ("bf16", 2.0)]:
        lin = nibble.nn.Linear(128, 64, recipe=recipe)
        with nibble.nn.measure_saved_bytes() as saved:
            lin(x)
        assert saved.bytes <= max_bytes_per_elem * x.numel() + 64, (recipe, saved.bytes)


def test_bad_input_names_the_layer():
    lin = nibble.nn.Linear(32, 16, recipe="fp8_current", name="blocks.3.mlp.up")
    with pytest.raises(ValueError, match=r"blocks\.3\.mlp\.up.*in_features = 32"):
        lin(torch.randn(4, 31))
    with pytest.raises(ValueError, match=r"blocks\.3\.mlp\.up.*dtype"):
        lin(torch.randn(4, 32, dtype=torch.float64))
    bad = torch.randn(4, 32)
    bad[2, 5] = float("nan")
    with pytest.raises(ValueError, match=r"blocks\.3\.mlp\.up\.input.*NaN at \(2, 5\)"):
        lin(bad)
    x = torch.randn(4, 32, requires_grad=True)
    y = lin(x)
    g = torch.ones_like(y)
    g[1, 1] = float("nan")
    # errors raised inside backward reach Python through the autograd engine as RuntimeError
    with pytest.raises(RuntimeError, match=r"blocks\.3\.mlp\.up\.grad_output.*NaN at \(1, 1\)"):
        y.backward(g)
    plain = nibble.nn.Linear(32, 16, recipe="bf16", name="lm_head")
    with pytest.raises(ValueError, match=r"lm_head: the input contains NaN"):
        plain(bad)


def sylvester_hadamard32():
    """The normalised 32-point Hadamard matrix by Sylvester's construction (independent of nibble's own)."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < 32:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / 32 ** 0.5


def rotate(t, signs):
    """pad(t) along the last dim to len(signs), times diag(signs), times the block-diagonal Hadamard-32."""
    t = torch.nn.functional.pad(t.double(), (0, signs.numel() - t.shape[-1]))
    return ((t * signs.double()).reshape(-1, 32) @ sylvester_hadamard32().T).reshape(t.shape)


@pytest.mark.parametrize("rows,cols", [(512, 1376), (48, 96), (3, 32)])
def test_hadamard32_is_the_sylvester_transform_and_independent_of_the_tensor_around_a_group(rows, cols):
    """Every 32-group's result depends on its 32 inputs only: a tensor-parallel shard (half the columns) or a
    sequence slice (half the rows) is rotated to the very bits of the whole tensor. (A BLAS matmul is not: at
    512 x 1376 its FP32 sums change order with the row count -- mxfp4_quartet's old tp drift.)"""
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows))
    full = _C.hadamard32(x)
    want = (x.double().reshape(-1, 32) @ sylvester_hadamard32()).reshape(rows, cols)
    assert torch.allclose(full.double(), want, rtol=1e-6, atol=1e-6)
    half = cols // 64 * 32 or 32
    assert torch.equal(_C.hadamard32(x[:, :half].contiguous()), full[:, :half])
    assert torch.equal(_C.hadamard32(x[: rows // 2 or 1].contiguous()), full[: rows // 2 or 1])
    x64 = x.double()  # an unrounded FP64 sum stays FP64, and H is its own inverse
    assert _C.hadamard32(x64).dtype == torch.float64
    assert torch.allclose(_C.hadamard32(_C.hadamard32(x64)), x64, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m,n", [(64, 48), (50, 40)])
def test_quartet_backward_rotates_both_operands_of_each_gemm_along_its_inner_dim(m, n):
    lin, x, y, dy, cap = run_captured("mxfp4_quartet", m=m, k=96, n=n, seed=3)
    rot = lin.state_for(lin.active_recipe()).captured_rotations()
    s_dgrad, s_wgrad = rot["dgrad"], rot["wgrad"]
    assert s_dgrad.numel() == (n + 31) // 32 * 32 and s_wgrad.numel() == (m + 31) // 32 * 32
    assert set(s_dgrad.tolist()) <= {-1.0, 1.0} and set(s_wgrad.tolist()) <= {-1.0, 1.0}
    # each captured operand is the MXFP4 quantization of the rotated tensor (absmax scale, SR: within 4-bit error)
    w, xd = lin.weight.detach(), x.detach()
    for role, exact in [("dy_row", rotate(dy, s_dgrad)), ("w_col", rotate(w.T, s_dgrad)),
                        ("dy_col", rotate(dy.T, s_wgrad)), ("x_col", rotate(xd.T, s_wgrad))]:
        assert deq(cap[role]).shape == exact.shape, role
        assert rel(deq(cap[role]), exact) < 0.2, role
    # the rotation cancels in each product (Q orthogonal): exact operands give exactly the unrotated product
    assert rel(rotate(dy, s_dgrad) @ rotate(w.T, s_dgrad).T, dy.double() @ w.double()) < 1e-12
    assert rel(rotate(dy.T, s_wgrad) @ rotate(xd.T, s_wgrad).T, dy.double().T @ xd.double()) < 1e-12


def test_quartet_backward_draws_new_signs_every_backward():
    lin = nibble.nn.Linear(64, 64, recipe="mxfp4_quartet")
    state = lin.state_for(lin.active_recipe())
    state.capture = True
    seen = []
    for _ in range(3):
        lin(torch.randn(32, 64, requires_grad=True)).sum().backward()
        seen.append(state.captured_rotations()["dgrad"])
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_quartet_rotation_lowers_gradient_error_on_outlier_rows():
    # Quartet's reason for the rotation: a few large entries per 32-block inflate an absmax scale and flush the
    # rest of the block; spread by the Hadamard they do not. Same backward format (MXFP4, SR), with and without.
    plain = nibble.Recipe.custom("mxfp4_sr", "mxfp4", backward_scheme="mxfp4", grad_rounding="stochastic")
    rotated = nibble.Recipe.custom("mxfp4_sr_rot", "mxfp4", backward_scheme="mxfp4", grad_rounding="stochastic",
                                   backward_hadamard=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 128, generator=g)
    dy = torch.randn(128, 64, generator=g)
    dy[:, ::16] *= 30.0  # outlier channels (dgrad's blocks run along channels)
    dy[::16, :] *= 30.0  # outlier tokens (wgrad's blocks run along tokens)
    errors = {}
    for recipe in (plain, rotated):
        lin = nibble.nn.Linear(128, 64, recipe=recipe)
        xg = x.clone().requires_grad_()
        lin(xg).backward(dy)
        w = lin.weight.detach().double()
        errors[recipe.name] = (rel(xg.grad, dy.double() @ w), rel(lin.weight.grad, dy.double().T @ x.double()))
    assert errors["mxfp4_sr_rot"][0] < 0.8 * errors["mxfp4_sr"][0], errors
    assert errors["mxfp4_sr_rot"][1] < 0.8 * errors["mxfp4_sr"][1], errors


def test_backward_hadamard_needs_quantized_current_scaled_backward_operands():
    with pytest.raises(ValueError, match="backward_hadamard.*dy_row must be quantized"):
        nibble.Recipe.custom("bad", "mxfp4", backward_scheme="bf16", backward_hadamard=True)
