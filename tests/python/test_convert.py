"""nibble.convert: which Linear layers it swaps and the report it gives on small hand-made models, its refusals
of bad arguments, the preserved weights and biases, and issue 16's acceptance test on a Hugging Face
LlamaForCausalLM built from a small config (no download), trained on real text against its unconverted self."""
import copy
import math
import os

import pytest
import torch

import nibble

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


class Tower(torch.nn.Module):
    """in -> blocks -> lm_head -> out: a first and a last Linear, a Linear named lm_head and a middle."""

    def __init__(self, middle_in=64, dtype=torch.float32):
        super().__init__()
        self.inp = torch.nn.Linear(32, 64)
        self.blocks = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, middle_in,
                                          bias=False), torch.nn.GELU(), torch.nn.Linear(middle_in, 64))
        self.lm_head = torch.nn.Linear(64, 48)
        self.out = torch.nn.Linear(48, 16)
        self.to(dtype)

    def forward(self, x):
        return self.out(self.lm_head(self.blocks(self.inp(x))))


# ---- what is converted, what is kept and why ------------------------------------------------------------------

def test_default_keeps_first_last_and_lm_head_and_converts_the_rest():
    torch.manual_seed(0)
    model = Tower()
    names = linear_names(model)
    report = nibble.convert(model, "mxfp8")
    kept = {names[0], names[-1], "lm_head"}
    assert report.converted == [n for n in names if n not in kept]
    assert set(report.kept) == kept
    assert "first" in report.kept[names[0]] and "last" in report.kept[names[-1]]
    assert "lm_head" in report.kept["lm_head"]
    for name in names:
        layer = model.get_submodule(name)
        if name in kept:
            assert type(layer) is torch.nn.Linear
        else:
            assert isinstance(layer, nibble.nn.Linear) and layer.active_recipe().name == "mxfp8"
            assert layer.layer_name == name  # the qualified name keys its stochastic rounding
    # The printed table has one row per Linear with its result.
    text = str(report)
    assert "mxfp8" in text.splitlines()[0]
    for name in names:
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert ("kept: " + report.kept[name]) in row if name in kept else row.rstrip().endswith("converted")


def test_skip_patterns_filter_fn_and_keep_first_last_are_configurable():
    model = Tower()
    seen = []

    def only_blocks(module, name):
        seen.append((type(module), name))
        return name.startswith("blocks.")

    report = nibble.convert(model, "fp8_current", skip=["blocks.4", "no_such_layer*"], filter_fn=only_blocks,
                            keep_first_last=False)
    assert report.converted == ["blocks.0", "blocks.2"]
    assert "blocks.4" in report.kept["blocks.4"]
    assert {report.kept[n] for n in ("inp", "lm_head", "out")} == {"filter_fn returned False"}
    assert all(t is torch.nn.Linear for t, _ in seen)  # called as filter_fn(module, name), torchao's order
    assert any("no_such_layer*" in note for note in report.notes)  # a pattern that matched nothing is named

    everything = nibble.convert(Tower(), "fp8_current", skip=(), keep_first_last=False)
    assert everything.converted == linear_names(Tower()) and not everything.kept


def test_a_shape_the_recipe_refuses_is_kept_named_and_the_model_still_trains():
    # mxfp4_quartet's QuEST forward works in Hadamard-32 groups along in_features: 100 cannot be converted.
    torch.manual_seed(0)
    model = Tower(middle_in=100)
    report = nibble.convert(model, "mxfp4_quartet", keep_first_last=False, skip=())
    reason = report.kept["blocks.4"]
    assert "100" in reason and "mxfp4_quartet" in reason
    assert type(model.blocks[4]) is torch.nn.Linear
    assert "blocks.2" in report.converted  # its out_features 100 is no obstacle
    assert "blocks.4" in str(report) and reason in str(report)
    loss = model(torch.randn(32, 32)).square().mean()  # no exception deep in a later forward or backward
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("what", ["float16", "float64", "meta device", "subclass", "hooked"])
def test_layers_nibble_cannot_run_are_kept_with_the_reason(what):
    model = Tower()
    target = model.blocks[2]
    if what in ("float16", "float64"):
        target.to(getattr(torch, what))
    elif what == "meta device":
        model.blocks[2] = torch.nn.Linear(64, 64, bias=False, device="meta")
    elif what == "subclass":  # e.g. MultiheadAttention's out_proj, whose weight the attention reads directly
        attention = torch.nn.MultiheadAttention(64, 4)
        model.blocks[2] = attention.out_proj
    else:
        target.register_forward_hook(lambda module, args, out: out)
    names = linear_names(model)
    report = nibble.convert(model, "nvfp4", keep_first_last=False, skip=())
    reason = report.kept["blocks.2"]
    expected = {"float16": "float16", "float64": "float64", "meta device": "meta", "subclass": "subclass",
                "hooked": "hooks"}[what]
    assert expected in reason, reason
    assert not isinstance(model.blocks[2], nibble.nn.Linear)
    assert report.converted == [n for n in names if n != "blocks.2"]


def test_a_shared_module_is_swapped_under_every_name_and_keeps_its_parameters():
    shared = torch.nn.Linear(64, 64)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(64, 64), "b": shared, "c": shared, "d": torch.nn.Linear(64, 8)})
    weight, bias = shared.weight, shared.bias
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before the swap
    report = nibble.convert(model, "mxfp8", keep_first_last=False)
    assert report.converted == ["a", "b", "c", "d"]
    assert model["b"] is model["c"] and isinstance(model["b"], nibble.nn.Linear)
    assert model["b"].weight is weight and model["b"].bias is bias  # the same Parameter objects
    assert "same module as b" in str(report)
    before = weight.detach().clone()
    model["c"](model["b"](torch.randn(32, 64))).sum().backward()
    optimizer.step()
    assert not torch.equal(before, weight)  # the optimizer's parameters are the converted layer's


def test_nvfp4_token_count_note_is_what_training_then_requires():
    # NVFP4's backward applies a 16-point RHT along the tokens: the report says so up front, and a converted
    # layer that meets another token count fails naming itself.
    model = Tower()
    report = nibble.convert(model, "nvfp4", keep_first_last=False, skip=())
    assert len(report.notes) == 1 and "1-token trial fails" in report.notes[0]
    model(torch.randn(32, 32)).sum().backward()
    with pytest.raises(ValueError, match=r"\(inp\.input, nvfp4\)"):
        model(torch.randn(20, 32)).sum().backward()
    with torch.no_grad():
        model(torch.randn(1, 32))  # inference quantizes no wgrad copy: any token count runs
    assert not nibble.convert(Tower(), "mxfp8").notes


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_converting_under_no_grad_or_inference_mode_decides_alike(mode):
    # The trial forward and backward needs gradients whatever mode the caller converts in.
    expected = nibble.convert(Tower(middle_in=100), "mxfp4_quartet")
    with mode():
        report = nibble.convert(Tower(middle_in=100), "mxfp4_quartet")
    assert report.converted == expected.converted and report.kept == expected.kept


# ---- refusals -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, words", [
    (dict(recipe="nvfp5"), ValueError, ["nvfp5", "nvfp4", "mxfp8"]),
    (dict(recipe=4), TypeError, ["recipe", "int", "nvfp4"]),
    (dict(module=[torch.nn.Linear(4, 4)]), TypeError, ["torch.nn.Module", "list"]),
    (dict(module=torch.nn.Linear(16, 16)), ValueError, ["itself a torch.nn.Linear"]),
    (dict(skip=5), TypeError, ["skip", "int"]),
    (dict(skip=["lm_head", None]), TypeError, ["skip", "NoneType"]),
    (dict(filter_fn="lm_head"), TypeError, ["filter_fn", "lm_head"]),
    (dict(keep_first_last="yes"), TypeError, ["keep_first_last", "yes"]),
])
def test_bad_arguments_are_refused_at_once_naming_the_value(kwargs, error, words):
    model = Tower()
    args = dict(module=model, recipe="nvfp4")
    args.update(kwargs)
    with pytest.raises(error) as info:
        nibble.convert(args.pop("module"), args.pop("recipe"), **args)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert not any(isinstance(m, nibble.nn.Linear) for m in model.modules())  # nothing half converted


# ---- weights, bias, dtype and device preserved ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_recipe_computes_what_the_original_computes(dtype):
    torch.manual_seed(0)
    original = Tower(dtype=dtype)
    converted = copy.deepcopy(original)
    parameters = dict(converted.named_parameters())
    report = nibble.convert(converted, "bf16", keep_first_last=False, skip=())
    assert len(report.converted) == len(linear_names(original))
    assert dict(converted.named_parameters()) == parameters  # same names, same Parameter objects
    assert converted.state_dict().keys() == original.state_dict().keys()
    for name, p in converted.named_parameters():
        assert p.dtype == dtype and p.device.type == "cpu" and torch.equal(p, dict(original.named_parameters())[name])

    # One layer: the bf16 recipe rounds its operands to BF16 and sums in FP32, i.e. F.linear of rounded operands.
    h = torch.randn(7, 64, dtype=dtype)
    layer, reference = converted.blocks[0], original.blocks[0]
    rounded = torch.nn.functional.linear(h.bfloat16().float(), reference.weight.bfloat16().float(),
                                         reference.bias.float())
    tolerance = 1e-5 if dtype == torch.float32 else 2 ** -8  # a bfloat16 output is rounded once more
    torch.testing.assert_close(layer(h).float(), rounded, rtol=tolerance, atol=tolerance)

    # The whole model forward and backward: equal within BF16 rounding of the operands.
    x = torch.randn(4, 8, 32, dtype=dtype)
    y, y_ref = converted(x), original(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0, atol=2e-2 * y_ref.abs().max().item())
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), p_ref in zip(converted.named_parameters(), original.parameters()):
        scale = p_ref.grad.abs().max().item()
        torch.testing.assert_close(p.grad.float(), p_ref.grad.float(), rtol=0, atol=3e-2 * scale, msg=name)


# ---- issue 16's acceptance test: a Hugging Face Llama -----------------------------------------------------------
# Sizes chosen to keep the whole section to about a minute on 2 threads: hidden 128, 2 layers, 4 heads, ffn 256,
# 256 byte tokens, batches of 8 x 64 tokens (a multiple of 16: NVFP4's RHT blocks the tokens), 50 AdamW steps.

BATCH, SEQ, STEPS, LR, WARMUP, EVAL_BATCHES = 8, 64, 50, 3e-3, 5, 16


def corpus_bytes():
    """The King James Bible that scripts/setup.sh writes, else Debian's licence texts (real English too)."""
    kjv = os.path.join(ROOT, "data", "kjv.txt")
    if os.path.isfile(kjv):
        with open(kjv, "rb") as f:
            return f.read()
    licences = "/usr/share/common-licenses"
    if not os.path.isdir(licences):
        pytest.skip("no real text: neither data/kjv.txt (scripts/setup.sh) nor /usr/share/common-licenses")
    text = b""
    for name in sorted(os.listdir(licences)):
        with open(os.path.join(licences, name), "rb") as f:
            text += f.read()
    return text


def byte_batches(tokens, count, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        starts = torch.randint(0, len(tokens) - SEQ, (BATCH,), generator=generator)
        yield torch.stack([tokens[s:s + SEQ] for s in starts.tolist()])


@pytest.fixture(scope="module")
def llama_setup():
    transformers = pytest.importorskip("transformers")
    data = torch.frombuffer(bytearray(corpus_bytes()), dtype=torch.uint8).long()
    split = len(data) * 9 // 10  # the last tenth is held out
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    return model, data[:split], data[split:]


def train_and_evaluate(model, train_tokens, val_tokens):
    """50 AdamW steps (linear warm-up, then constant) under BF16 autocast, then the mean held-out loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP))
    model.train()
    for batch in byte_batches(train_tokens, STEPS, seed=1):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [model(input_ids=b, labels=b).loss.item() for b in byte_batches(val_tokens, EVAL_BATCHES, seed=2)]
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def reference_loss(llama_setup):
    """The unconverted model trained the same way: every Linear in BF16 under torch.autocast."""
    model, train_tokens, val_tokens = llama_setup
    return train_and_evaluate(copy.deepcopy(model), train_tokens, val_tokens)


def test_llama_conversion_report_and_forward_backward(llama_setup):
    model, train_tokens, _ = llama_setup
    model = copy.deepcopy(model)
    names = linear_names(model)
    report = nibble.convert(model, "nvfp4")
    print(report)
    kept = {names[0], "lm_head"}  # the first Linear (layers.0's q_proj) and the head, which is also the last
    assert set(report.kept) == kept and report.converted == [n for n in names if n not in kept]
    batch = next(byte_batches(train_tokens, 1, seed=3))
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    assert math.isfinite(loss.item())
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("recipe", ["nvfp4", "mxfp8"])
def test_llama_converted_trains_within_two_percent_of_bf16(llama_setup, reference_loss, recipe):
    model, train_tokens, val_tokens = llama_setup
    model = copy.deepcopy(model)
    assert nibble.convert(model, recipe).converted
    loss = train_and_evaluate(model, train_tokens, val_tokens)
    gap = loss / reference_loss - 1
    print(f"{recipe}: held-out loss {loss:.4f} after {STEPS} steps, unconverted BF16 {reference_loss:.4f}, "
          f"gap {100 * gap:+.2f}%")
    assert reference_loss < math.log(256) - 1.5  # both learned something (uniform guess: ln 256 = 5.55)
    assert abs(gap) <= 0.02
