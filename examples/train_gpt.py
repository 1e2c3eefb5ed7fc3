"""nibble-train's training loop, written as a plain PyTorch loop over nibble.models.GPT and nibble.optim.AdamW.

    mpirun -np 2 python examples/train_gpt.py --config examples/configs/tiny.toml --parallel.dp 2 \\
        [--section.key value ...] [--metrics FILE]

(``PYTHONPATH=build/python_package`` when the package is not installed.) It takes nibble-train's config and
overrides, runs the same validation, and then does per step what launch/trainer.cpp does: this rank's
micro-batches of the step (nibble.models.TrainBatches: nibble-train's sampler and split), each keyed for
stochastic rounding by (step, global micro-batch index), backward of loss / micro-batches, the gradients averaged
over dp (one flat all-reduce in parameter order), the global gradient norm and nibble-train's clipping coefficient,
the LR schedule's factor, nibble.optim.AdamW's step, and delayed scaling's amax reduction and end_step.

Agreement: the per-step losses (and LRs and gradient norms) are bit-identical to nibble-train's on the same config
and seeds (tests/python/test_models_gpt.py runs both under mpirun -np 2 at dp = 2 in NVFP4 with FP8 optimizer
states, two micro-batches per rank and clipping, and compares their records with ==). Bit-identical because nothing is re-implemented: the model, the batches,
the reductions and the clipping coefficient are nibble-train's C++ functions, and the optimizer is the C++
optimizer nibble-train steps. The only Python arithmetic is what the trainer does in the same IEEE double steps
(the mean of the micro-batch losses; lr * factor, which LambdaLR forms as the trainer does) and the clipping
scale, applied to the gradients in place (float32 g * c, the multiplication the optimizer's fused load makes in
nibble-train). Layouts: tp and dp (any sizes the config allows); pp, cp and ZeRO-1 are refused (nibble-train's).
"""
import argparse
import json
import math
import os
import sys

import torch

import nibble
from nibble import _C


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a nibble-train TOML config")
    p.add_argument("--metrics", default=None, help="rank 0 writes one JSON line per step here (step, loss, lr, "
                                                   "grad_norm), as nibble-train's metrics.jsonl")
    args, rest = p.parse_known_args(argv)
    if len(rest) % 2 or any(not k.startswith("--") for k in rest[::2]):
        p.error(f"overrides come as --section.key value pairs, got {rest}")
    args.overrides = {k[2:]: v for k, v in zip(rest[::2], rest[1::2])}
    return args


def make_optimizer(config, params):
    """nibble-train's [optim] keys as nibble.optim's optimizer (launch/train_config.h optimizer_config)."""
    o = config.optimizer_config()
    if o["kind"] != "adamw":
        raise ValueError(f"examples/train_gpt.py: optim.optimizer = {o['kind']!r}; this example steps AdamW")
    return nibble.optim.AdamW(params, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                              weight_decay=o["weight_decay"], state=o["state"], master=o["master"], seed=o["seed"],
                              stochastic_rounding=o["stochastic_rounding"])


def main(argv):
    args = parse_args(argv)
    config = nibble.models.load_config(args.config, args.overrides)
    runtime = nibble.parallel.init(deadline=config.timeout_s)
    config.validate(runtime.world_size)  # nibble-train's checks, before anything is allocated
    if config.pp > 1 or config.cp > 1 or config.zero:
        raise ValueError("examples/train_gpt.py trains tp x dp layouts; pp, cp and optim.zero are nibble-train's")
    torch.set_num_threads(_C.train_threads(config))
    mesh = nibble.parallel.Mesh(tp=config.tp, cp=config.cp, dp=config.dp, pp=config.pp)
    model = nibble.models.GPT(config, mesh=mesh)
    data = nibble.models.TrainBatches(config, mesh)
    opt = make_optimizer(config, model.parameters())
    schedule = nibble.optim.lr_schedule(opt, config.schedule, config.warmup, config.steps, config.min_lr_ratio)
    lead = runtime.rank == 0
    out = open(args.metrics, "w") if lead and args.metrics else None

    for step in range(config.steps):
        nibble.parallel.set_step(step + 1)
        model.zero_grad()
        batches = data.step(step)
        m = float(len(batches))
        loss_sum = 0.0
        for tokens, targets, stream in batches:
            model.set_rounding_stream(stream)
            loss = model(tokens, targets)
            (loss / m).backward()
            loss_sum += loss.item()
        model.all_reduce_replicated_grads()  # sequence parallel's norm weights
        loss = model.mean_over_dp(loss_sum / m)
        model.average_gradients()
        grad_norm = model.grad_norm()
        clip = _C.clip_coefficient(grad_norm, config.grad_clip) if config.grad_clip > 0 else 1.0
        if clip < 1.0:
            with torch.no_grad():
                for p in model.parameters():
                    p.grad.mul_(clip)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        if opt.last_step["skipped"]:
            print(f"step {step + 1} skipped: non-finite gradient in {opt.last_step['bad_param']}", file=sys.stderr)
        schedule.step()
        model.reduce_delayed_amaxes()
        model.end_step()
        if lead:
            print(f"step {step + 1:5d}/{config.steps} | loss {loss:.4f} | lr {lr:.2e} | grad norm {grad_norm:.3f}",
                  flush=True)
            if out:
                out.write(json.dumps({"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm}) + "\n")
                out.flush()
    if out:
        out.close()
    return model


if __name__ == "__main__":
    main(sys.argv[1:])
