"""nibble.optim: AdamW / SGD with fp32, bf16, fp8 (COAT DRE), fp8_plain and int8 states (issue 5's list).

Oracles: torch.optim.AdamW / SGD (+ clip_grad_norm_) for the FP32 path, torchao's copy of bitsandbytes'
create_dynamic_map for the int8 code, an FP32-state training run for the compressed codecs.
"""
import copy
import io
import math
import warnings

import pytest
import torch
from torch.func import functional_call

import nibble
from nibble import optim as nopt

torch.set_num_threads(2)


# ---- FP32 states against torch.optim ---------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("case", range(4))
def test_fp32_adamw_matches_torch_over_100_steps(case):
    g = torch.Generator().manual_seed(case)
    shapes = [(64, 48), (257,), (3, 5, 7), (4096 + 5,)]
    lr, wd = [1e-3, 1e-2, 3e-3, 5e-4][case], [0.0, 0.01, 0.1, 0.05][case]
    betas = [(0.9, 0.999), (0.8, 0.99), (0.9, 0.95), (0.95, 0.999)][case]
    init = [torch.randn(s, generator=g) for s in shapes]
    ours = [t.clone().requires_grad_() for t in init]
    ref = [t.clone().requires_grad_() for t in init]
    opt = nopt.AdamW(ours, lr=lr, betas=betas, weight_decay=wd, eps=1e-8)
    ref_opt = torch.optim.AdamW(ref, lr=lr, betas=betas, weight_decay=wd, eps=1e-8)
    target = [torch.randn(s, generator=g) for s in shapes]
    for _ in range(100):
        for p, q, t in zip(ours, ref, target):
            # A quadratic pull toward a target plus noise: gradients depend on the trajectory.
            noise = torch.randn(p.shape, generator=g)
            p.grad = (p.detach() - t) + noise
            q.grad = (q.detach() - t) + noise
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        assert _rel(p.detach(), q.detach()) <= 1e-6
        assert _rel(opt.state[p]["exp_avg"], ref_opt.state[q]["exp_avg"]) <= 1e-6
        assert _rel(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"]) <= 1e-6
        assert int(opt.state[p]["step"]) == 100


@pytest.mark.parametrize("nesterov,dampening,wd", [(False, 0.0, 0.0), (True, 0.0, 0.01), (False, 0.3, 0.1)])
def test_fp32_sgd_matches_torch(nesterov, dampening, wd):
    g = torch.Generator().manual_seed(1)
    p0 = torch.randn(1000, generator=g)
    p, q = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    opt = nopt.SGD([p], lr=0.05, momentum=0.9, dampening=dampening, weight_decay=wd, nesterov=nesterov)
    ref = torch.optim.SGD([q], lr=0.05, momentum=0.9, dampening=dampening, weight_decay=wd, nesterov=nesterov)
    for _ in range(50):
        grad = torch.randn(1000, generator=g) + p0
        p.grad, q.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    assert _rel(p.detach(), q.detach()) <= 1e-6


def test_clipping_matches_clip_grad_norm_then_adamw():
    g = torch.Generator().manual_seed(2)
    init = [torch.randn(100, 30, generator=g), torch.randn(30, generator=g)]
    ours = [t.clone().requires_grad_() for t in init]
    ref = [t.clone().requires_grad_() for t in init]
    opt = nopt.AdamW(ours, lr=1e-2, max_grad_norm=1.0)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2)
    for step in range(30):
        for p, q in zip(ours, ref):
            grad = torch.randn(p.shape, generator=g) * (10.0 if step % 2 else 0.01)  # clipped, then not
            p.grad, q.grad = grad.clone(), grad.clone()
        opt.step()
        norm = torch.nn.utils.clip_grad_norm_(ref, 1.0)
        ref_opt.step()
        assert opt.last_step["grad_norm"] == pytest.approx(norm.item(), rel=1e-6)
        assert ours[0].grad.norm() > 1.0 or step % 2 == 0  # .grad is left untouched
    for p, q in zip(ours, ref):
        assert _rel(p.detach(), q.detach()) <= 1e-6


@pytest.mark.parametrize("max_norm", [1.0, 0.75, 3.0])
def test_every_clipping_path_uses_one_coefficient_at_the_boundary(max_norm):
    """There used to be three rules: the trainer scaled only when norm > max, global clipping and nibble.optim
    used torch's min(1, max / (norm + 1e-6)). Now optim/clip.h is the only one: nibble.optim's max_grad_norm,
    global clipping (nibble.data_parallel.clip_grad_norm_) and the coefficient the trainer and ZeroAdamW take
    (_C.clip_coefficient, the same C++ function) agree bit for bit with torch's rule at norm == max (which
    already clips) and just above it."""
    from nibble import _C, data_parallel

    for norm in (max_norm, torch.nextafter(torch.tensor(max_norm), torch.tensor(math.inf)).item()):
        g = torch.tensor([norm], dtype=torch.float32)  # one element: the FP64 norm is exactly `norm`
        expected = torch.tensor(min(1.0, max_norm / (norm + 1e-6)), dtype=torch.float32).item()
        assert expected < 1.0
        assert _C.clip_coefficient(norm, max_norm) == expected
        # nibble.optim: SGD at lr 1 from 0 without momentum leaves p = -(clip * g), clip as the fused pass applied it
        p = torch.zeros(1, requires_grad=True)
        p.grad = g.clone()
        opt = nopt.SGD([p], lr=1.0, momentum=0.0, max_grad_norm=max_norm)
        opt.step()
        assert opt.last_step["grad_norm"] == norm and opt.last_step["clip"] == expected
        assert p.item() == -(g * expected).item()
        # global clipping (no groups to sum over: one process)
        q = torch.zeros(1, requires_grad=True)
        q.grad = g.clone()
        assert data_parallel.clip_grad_norm_([q], max_norm) == norm
        assert q.grad.item() == (g * expected).item()
        # torch itself (it computes the coefficient in float32: within an ulp)
        r = torch.zeros(1, requires_grad=True)
        r.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([r], max_norm)
        assert r.grad.item() == pytest.approx(q.grad.item(), rel=2 ** -22)


# ---- codecs on their own ---------------------------------------------------------------------------------
def test_int8_dynamic_map_matches_bitsandbytes_create_dynamic_map():
    from torchao.optim.quant_utils import create_dynamic_map  # bitsandbytes' function, as vendored by torchao

    for signed in (True, False):
        ours = nopt.dynamic_map(signed)
        ref = torch.tensor(create_dynamic_map(signed), dtype=torch.float32).sort().values
        assert ours.shape == (256,)
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("codec", ["fp8", "fp8_plain", "int8", "bf16"])
@pytest.mark.parametrize("signed", [True, False])
def test_constant_zero_and_single_element_groups(codec, signed):
    n = 4096 + 129  # int8 needs >= 4096 elements; 129 = a full fp8 group plus a single-element group
    sign = 1.0 if not signed else -1.0
    cases = {
        "constant": torch.full((n,), 3.0e-6 * sign),
        "zero": torch.zeros(n),
        "single": torch.cat([torch.zeros(n - 1), torch.tensor([2.5e-3 * sign])]),
        "one_nonzero_per_group": torch.zeros(n).index_fill_(0, torch.arange(0, n, 128), 0.75 * sign),
    }
    # The last fp8 group holds one element: a tail single-element group with a different value.
    cases["tail"] = torch.cat([torch.linspace(1e-4, 1e-2, n - 1) * sign, torch.tensor([7e-5])])
    if not signed:
        cases = {k: v.abs() for k, v in cases.items()}
    for name, x in cases.items():
        enc = nopt.encode_state(x, codec, signed=signed)
        for key, t in enc.items():
            if t.is_floating_point():
                assert torch.isfinite(t.float()).all(), (name, key)
        y = nopt.decode_state(enc, codec, n, signed=signed)
        assert torch.isfinite(y).all(), name
        assert torch.equal(y[x == 0], torch.zeros_like(y[x == 0])), name  # zeros stay exactly zero
        nonzero = x != 0
        rel = ((y[nonzero] - x[nonzero]).abs() / x[nonzero].abs()) if nonzero.any() else torch.zeros(1)
        bound = {"fp8": 1e-4, "fp8_plain": 0.07, "int8": 0.01, "bf16": 4e-3}[codec]
        if name == "tail" and codec != "fp8":
            bound = 0.2 if codec == "fp8_plain" else 0.6  # absmax codecs lose small values next to large ones
        if name == "tail" and codec == "fp8":
            bound = 0.1  # a real spread: E4M3's step divided by k
        assert rel.max().item() <= bound, (name, rel.max().item())


def _adam_moments_from_training(steps=200):
    """exp_avg / exp_avg_sq of the weight matrices of a small MLP trained with torch.optim.AdamW."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=g)
    labels = (x[:, :10] * torch.arange(1, 11)).argmax(dim=1)
    for _ in range(steps):
        idx = torch.randint(0, 2048, (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [(opt.state[p]["exp_avg"].reshape(-1), opt.state[p]["exp_avg_sq"].reshape(-1))
            for p in model.parameters() if p.dim() == 2]


def test_dre_beats_plain_fp8_on_real_adam_moments():
    """COAT Table 1's ordering: the update direction m / (sqrt(v) + eps) after quantizing both moments is
    closer to the FP32 one with dynamic range expansion than with plain per-group absmax FP8."""
    eps = 1e-8
    errors = {}
    for codec in ("fp8", "fp8_plain", "int8", "bf16"):
        num = den = 0.0
        for m, v in _adam_moments_from_training():
            mq = nopt.decode_state(nopt.encode_state(m, codec, signed=True), codec, m.numel(), signed=True)
            vq = nopt.decode_state(nopt.encode_state(v, codec, signed=False), codec, v.numel(), signed=False)
            u = m.double() / (v.double().sqrt() + eps)
            uq = mq.double() / (vq.double().clamp_min(0).sqrt() + eps)
            num += ((uq - u) ** 2).sum().item()
            den += (u ** 2).sum().item()
        errors[codec] = num / den
    print("relative MSE of m/(sqrt(v)+eps):", errors)
    assert errors["fp8"] < errors["fp8_plain"]
    assert errors["fp8"] < 0.05


# ---- training ----------------------------------------------------------------------------------------------
def _make(kind):
    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 128),
                                   torch.nn.GELU(), torch.nn.Linear(128, 8))
    return torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)


def _task(kind):
    """A student/teacher regression with label noise (a loss floor, so "within 2%" compares optimizers,
    not how close each gets to zero). Every tensor of the student is >= 4096 elements or a small vector."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(100)
    teacher = _make(kind)
    x = torch.randn((2048, 32) if kind == "mlp" else (256, 16, 64), generator=g)
    with torch.no_grad():
        y = teacher(x)
        y = y / y.std() + 0.5 * torch.randn(y.shape, generator=g)
    torch.manual_seed(200)
    return _make(kind), x, y


_RUNS = {}


def _train(kind, dtype=torch.float32, lr=3e-3, steps=300, **opt_kwargs):
    """Final full-data loss after `steps` AdamW steps on `kind`; parameters stored in `dtype`, forward in FP32."""
    key = (kind, dtype, lr, steps, tuple(sorted(opt_kwargs.items())))
    if key in _RUNS:
        return _RUNS[key]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add barriers (and stalls on a busy machine)
    try:
        final = _train_run(kind, dtype, lr, steps, **opt_kwargs)
    finally:
        torch.set_num_threads(threads)
    _RUNS[key] = final
    return final


def _train_run(kind, dtype, lr, steps, **opt_kwargs):
    student, x, y = _task(kind)
    params = {k: v.detach().to(dtype).clone().requires_grad_() for k, v in student.named_parameters()}
    opt = nopt.AdamW(list(params.items()), lr=lr, **opt_kwargs)
    g = torch.Generator().manual_seed(1)
    batch = 256 if kind == "mlp" else 32
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        out = functional_call(student, {k: v.float() for k, v in params.items()}, (x[idx],))
        loss = torch.nn.functional.mse_loss(out, y[idx])
        for p in params.values():
            p.grad = None
        loss.backward()
        opt.step()
        assert not opt.last_step["skipped"]
    with torch.no_grad():
        out = functional_call(student, {k: v.float() for k, v in params.items()}, (x,))
        return torch.nn.functional.mse_loss(out, y).item()


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
@pytest.mark.parametrize("codec", ["fp8", "int8"])
def test_compressed_states_train_within_2_percent_of_fp32(kind, codec):
    reference = _train(kind, state="fp32")
    loss = _train(kind, state=codec)
    print(f"{kind}: fp32 {reference:.5f}, {codec} {loss:.5f}")
    assert abs(loss - reference) <= 0.02 * reference


@pytest.mark.parametrize("kind,lr", [("mlp", 1e-4), ("transformer", 1e-4)])
def test_masterless_bf16_with_stochastic_rounding(kind, lr):
    """BF16 parameters without an FP32 master. The LR is small enough that most updates are below half a
    BF16 ulp of their weight: round-to-nearest drops them (training stalls), stochastic rounding keeps them
    in expectation and tracks the FP32 run."""
    start = _train(kind, lr=lr, steps=0, weight_decay=0.0)
    reference = _train(kind, lr=lr, weight_decay=0.0)
    sr = _train(kind, dtype=torch.bfloat16, lr=lr, master="none", weight_decay=0.0)
    rne = _train(kind, dtype=torch.bfloat16, lr=lr, master="none", stochastic_rounding=False, weight_decay=0.0)
    print(f"{kind}: start {start:.4f} fp32 {reference:.4f} bf16+SR {sr:.4f} bf16+RNE {rne:.4f}")
    assert abs(sr - reference) <= 0.02 * reference
    # RNE gives up a real part of the FP32 run's progress; SR gives up almost none of it.
    progress = start - reference
    assert progress > 0.1 * start
    assert rne - reference > 0.25 * progress
    assert sr - reference < 0.2 * (rne - reference)


# ---- state ----------------------------------------------------------------------------------------------------
def _stepped_optimizer(codec, dtype, master, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(70, 90, generator=g).to(dtype).requires_grad_(), torch.randn(33, generator=g).to(dtype)
              .requires_grad_(), torch.randn(5000, generator=g).to(dtype).requires_grad_()]
    opt = nopt.AdamW(params, lr=1e-2, state=codec, master=master, seed=5)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
    return params, opt, g


@pytest.mark.parametrize("codec", nopt.STATE_CODECS)
@pytest.mark.parametrize("dtype,master", [(torch.float32, "fp32"), (torch.bfloat16, "fp32"), (torch.bfloat16, "none")])
def test_state_dict_round_trip_is_bit_exact(codec, dtype, master):
    params, opt, g = _stepped_optimizer(codec, dtype, master)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    clones = [p.detach().clone().requires_grad_() for p in params]
    other = nopt.AdamW(clones, lr=1e-2, state=codec, master=master, seed=5)
    other.load_state_dict(saved)
    keys = set()
    for p, q in zip(params, clones):
        a, b = opt.state[p], other.state[q]
        assert set(a) == set(b)
        keys |= set(a)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key].view(torch.uint8) if a[key].dim() else a[key],
                               b[key].view(torch.uint8) if b[key].dim() else b[key]), key
    expected = {"fp8": {"exp_avg_scale", "exp_avg_k", "exp_avg_centre"}, "fp8_plain": {"exp_avg_scale"},
                "int8": {"exp_avg_scale"}}.get(codec, set())
    assert expected <= keys and "step" in keys
    assert ("master" in keys) == (dtype == torch.bfloat16 and master == "fp32")
    # The next step from the loaded state equals the next step from the original, bit for bit.
    for p, q in zip(params, clones):
        p.grad = torch.randn(p.shape, generator=g).to(dtype)
        q.grad = p.grad.clone()
    opt.step()
    other.step()
    for p, q in zip(params, clones):
        assert torch.equal(p.detach().view(torch.uint8), q.detach().view(torch.uint8))


def test_load_state_dict_rejects_a_state_of_another_layout():
    params, opt, _ = _stepped_optimizer("fp8", torch.float32, "fp32")
    state = copy.deepcopy(opt.state_dict())
    first = next(iter(state["state"].values()))
    first["exp_avg_scale"] = first["exp_avg_scale"][:-1]
    fresh = nopt.AdamW([p.detach().clone().requires_grad_() for p in params], state="fp8")
    with pytest.raises(ValueError, match="exp_avg_scale"):
        fresh.load_state_dict(state)


def test_bytes_per_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024))
    per = {codec: nopt.AdamW(model.parameters(), state=codec).bytes_per_param() for codec in nopt.STATE_CODECS}
    print("state bytes per parameter (two moments):", per)
    assert per["fp8"] <= 2.2
    assert per["fp8"] == pytest.approx(2 * (1 + 12 / 128), rel=2e-3)  # codes + (scale, k, centre) per 128
    assert per["fp32"] == pytest.approx(8.0)
    assert per["bf16"] == pytest.approx(4.0)
    weights, biases = 2 * 1024 * 1024, 2 * 1024  # int8 keeps the biases (< 4096 elements) in FP32
    assert per["int8"] == pytest.approx((weights * 2 * (1 + 4 / 256) + biases * 8) / (weights + biases), rel=1e-9)
    assert per["fp8_plain"] == pytest.approx(2 * (1 + 4 / 128), rel=2e-3)
    bf16 = [torch.nn.Parameter(torch.zeros(1 << 16, dtype=torch.bfloat16))]
    assert nopt.AdamW(bf16, state="fp8", master="fp32").bytes_per_param(include_master=True) == pytest.approx(
        2 * (1 + 12 / 128) + 4)
    # The count matches the allocated tensors.
    params, opt, _ = _stepped_optimizer("fp8", torch.float32, "fp32")
    allocated = sum(t.numel() * t.element_size() for s in opt.state.values() for k, t in s.items() if k != "step")
    assert opt.state_bytes() == allocated


# ---- NaN / Inf -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["fp32", "fp8", "int8"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_skips_the_step_and_names_the_parameter(codec, bad):
    model = torch.nn.Sequential(torch.nn.Linear(80, 64), torch.nn.Linear(64, 4))
    opt = nopt.AdamW(model.named_parameters(), lr=1e-2, state=codec)
    x = torch.randn(16, 80)
    model(x).square().mean().backward()
    opt.step()
    before_params = {k: v.detach().clone() for k, v in model.named_parameters()}
    before_state = {k: {s: t.clone() for s, t in opt.state[v].items()} for k, v in model.named_parameters()}
    opt.zero_grad()
    model(x).square().mean().backward()
    model[1].weight.grad[2, 3] = bad
    with pytest.warns(RuntimeWarning, match=r"'1\.weight'"):
        opt.step()
    assert opt.last_step["skipped"] and opt.last_step["bad_param"] == "1.weight"
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before_params[k]), k
        for s, t in opt.state[v].items():
            assert torch.equal(t, before_state[k][s]), (k, s)
    # The next finite step proceeds, with step counters that did not count the skipped one.
    model[1].weight.grad[2, 3] = 0.0
    opt.step()
    assert not opt.last_step["skipped"]
    assert all(int(opt.state[p]["step"]) == 2 for p in model.parameters())


def test_nonfinite_gradient_can_raise():
    p = torch.zeros(10, requires_grad=True)
    opt = nopt.AdamW([("embedding.weight", p)], on_nonfinite="raise")
    p.grad = torch.full((10,), float("nan"))
    with pytest.raises(nopt.NonFiniteGradientError, match="embedding.weight") as info:
        opt.step()
    assert info.value.param_name == "embedding.weight"
    assert torch.equal(p.detach(), torch.zeros(10))


# ---- LR schedules and API errors ---------------------------------------------------------------------------------
def test_lr_schedules():
    assert nopt.lr_factor(0, "cosine", 10, 110, 0.1) == pytest.approx(0.1)
    assert nopt.lr_factor(9, "cosine", 10, 110, 0.1) == pytest.approx(1.0)
    assert nopt.lr_factor(60, "cosine", 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-12)
    assert nopt.lr_factor(35, "cosine", 10, 110, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)), abs=1e-12)
    assert nopt.lr_factor(1000, "linear", 0, 100, 0.2) == pytest.approx(0.2)
    assert nopt.lr_factor(50, "linear", 0, 100, 0.0) == pytest.approx(0.5)
    assert nopt.lr_factor(3, "constant", 0, 0, 0.0) == 1.0
    p = torch.zeros(4, requires_grad=True)
    opt = nopt.AdamW([p], lr=1.0)
    sched = nopt.lr_schedule(opt, "linear", warmup_steps=2, total_steps=6)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(4)
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError, match="valid: constant, cosine, linear"):
        nopt.lr_schedule(opt, "step")
    with pytest.raises(ValueError, match="total_steps"):
        nopt.lr_factor(0, "cosine", 10, 5)


def test_invalid_arguments_are_named():
    p = torch.zeros(4, requires_grad=True)
    with pytest.raises(ValueError, match="fp4"):
        nopt.AdamW([p], state="fp4")
    with pytest.raises(ValueError, match="master"):
        nopt.AdamW([p], master="fp16")
    with pytest.raises(ValueError, match="betas"):
        nopt.AdamW([p], betas=(1.0, 0.999))
    with pytest.raises(TypeError, match="float64"):
        nopt.AdamW([torch.zeros(3, dtype=torch.float64, requires_grad=True)])
    assert nibble.optim is nopt
