"""nibble's Python front-end on CUDA tensors against the same calls on CPU tensors (issue 15).

Every test here needs a CUDA device and is skipped without one (as on the machines this project is developed and
CI-tested on: pytest -ra lists the skips). On a GPU machine: quantized copies bit for bit, dequantize bit for bit,
a Linear moved with .cuda() forward and backward within FP32 summation-order tolerance of the CPU layer, and the
nibble.optim step on CUDA parameters bit for bit.
"""
import pytest
import torch

import nibble

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: nibble's CUDA paths are compiled here, not run")

SCHEMES = ["fp8_tensor", "fp8_tensor_e5m2", "fp8_block128", "fp8_block16", "fp8_block128x128", "mxfp8", "nvfp4",
           "nvfp4_2d", "mxfp4", "mxfp4_quest"]


def _same_copy(a, b):
    assert torch.equal(a.data, b.data.cpu())
    assert torch.equal(a.scale, b.scale.cpu())
    assert torch.equal(a.global_amax, b.global_amax.cpu())
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        assert torch.equal(a.mask, b.mask.cpu())


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("rounding", ["rne", "stochastic"])
def test_quantize_on_cuda_equals_cpu(scheme, rounding):
    torch.manual_seed(0)
    x = torch.randn(192, 256) * torch.randn(192, 256).exp()
    kw = dict(rowwise=True, columnwise=True, rounding=rounding, seed=7, rht=scheme == "nvfp4")
    cpu, gpu = nibble.quantize(x, scheme, **kw), nibble.quantize(x.cuda(), scheme, **kw)
    assert gpu.data.is_cuda
    _same_copy(cpu, gpu)
    _same_copy(cpu.columnwise, gpu.columnwise)
    assert torch.equal(cpu.dequantize(), gpu.dequantize().cpu())
    assert torch.equal(cpu.columnwise.dequantize(), gpu.columnwise.dequantize().cpu())


@pytest.mark.parametrize("recipe", ["bf16", "fp8_current", "fp8_delayed", "fp8_block", "mxfp8", "nvfp4", "mxfp4", "mxfp4_quartet"])
def test_linear_moved_with_cuda_matches_cpu(recipe):
    torch.manual_seed(1)
    cpu = nibble.nn.Linear(256, 128, recipe=recipe, name="proj", seed=3)
    gpu = nibble.nn.Linear(256, 128, recipe=recipe, name="proj", seed=3)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.randn(64, 256)
    dy = torch.randn(64, 128)
    xc, xg = x.clone().requires_grad_(), x.cuda().requires_grad_()
    yc, yg = cpu(xc), gpu(xg)
    yc.backward(dy)
    yg.backward(dy.cuda())
    for a, b in [(yc, yg), (xc.grad, xg.grad), (cpu.weight.grad, gpu.weight.grad)]:
        b = b.detach().cpu()
        scale = a.detach().abs().max().item() + 1e-30
        assert (a.detach() - b).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("state", ["fp32", "bf16", "fp8", "int8"])
def test_optimizer_step_on_cuda_equals_cpu(state):
    torch.manual_seed(2)
    wc = torch.nn.Parameter(torch.randn(1000))
    wg = torch.nn.Parameter(wc.detach().cuda().clone())
    oc = nibble.optim.AdamW([wc], lr=1e-2, state=state, seed=5)
    og = nibble.optim.AdamW([wg], lr=1e-2, state=state, seed=5)
    for _ in range(3):
        g = torch.randn(1000)
        wc.grad, wg.grad = g.clone(), g.cuda()
        oc.step()
        og.step()
        assert torch.equal(wc.detach(), wg.detach().cpu())
