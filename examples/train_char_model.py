"""A small byte-level language model trained on the corpus with nibble's low-precision Linear layers.

An example of nibble's Python API (the GPT trainer is `nibble-train`: scripts/main.sh, docs/TRAINING.md): a
context of --context bytes is embedded, passed through an MLP of nibble.nn.Linear / RMSNorm / SwiGLU blocks in the
chosen recipe (default NVFP4: 4-bit fprop/dgrad/wgrad with RHT and stochastic rounding, compressed
activations), and trained with AdamW to predict the next byte. It prints progress, held-out loss and a
sample of generated text.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import nibble

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "kjv.txt")


class CharModel(torch.nn.Module):
    def __init__(self, context: int, dim: int, hidden: int, layers: int, recipe: str):
        super().__init__()
        self.embed = torch.nn.Embedding(256, dim)  # high precision, as TE keeps embeddings
        self.proj_in = nibble.nn.Linear(context * dim, dim, recipe=recipe, name="proj_in")
        self.blocks = torch.nn.ModuleList()
        for i in range(layers):
            self.blocks.append(torch.nn.ModuleDict({
                "norm": nibble.nn.RMSNorm(dim, recipe=recipe, name=f"blocks.{i}.norm"),
                "gate": nibble.nn.Linear(dim, hidden, recipe=recipe, name=f"blocks.{i}.gate"),
                "up": nibble.nn.Linear(dim, hidden, recipe=recipe, name=f"blocks.{i}.up"),
                "act": nibble.nn.SwiGLU(recipe=recipe, name=f"blocks.{i}.swiglu"),
                "down": nibble.nn.Linear(hidden, dim, recipe=recipe, name=f"blocks.{i}.down"),
            }))
        self.norm = nibble.nn.RMSNorm(dim, recipe="bf16", name="final_norm")
        self.head = nibble.nn.Linear(dim, 256, recipe="bf16", name="lm_head")  # high-precision LM head

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(self.embed(ctx).flatten(1))
        for b in self.blocks:
            n = b["norm"](h)
            h = h + b["down"](b["act"](b["gate"](n), b["up"](n)))
        return self.head(self.norm(h))


def batches(data: torch.Tensor, context: int, batch: int, generator: torch.Generator):
    while True:
        idx = torch.randint(0, data.numel() - context - 1, (batch,), generator=generator)
        offsets = idx[:, None] + torch.arange(context + 1)
        window = data[offsets].long()
        yield window[:, :-1], window[:, -1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="nvfp4", help=f"one of {', '.join(nibble.recipes)} or exmy:<fmt>")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    if not os.path.isfile(CORPUS):
        raise SystemExit(f"corpus {CORPUS} not found: run scripts/setup.sh")
    raw = torch.frombuffer(bytearray(open(CORPUS, "rb").read()), dtype=torch.uint8)
    split = int(raw.numel() * 0.98)
    train, held = raw[:split], raw[split:]
    print(f"corpus {os.path.normpath(CORPUS)}: {raw.numel():,} bytes ({train.numel():,} train, "
          f"{held.numel():,} held out); recipe {args.recipe}")

    model = CharModel(args.context, args.dim, args.hidden, args.layers, args.recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    it = batches(train, args.context, args.batch, gen)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = next(it)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        nibble.nn.end_step(model)
        if step == 1 or step % 25 == 0 or step == args.steps:
            elapsed = time.perf_counter() - t0
            tok_s = step * args.batch / elapsed
            print(f"step {step:>5}/{args.steps}  loss {loss.item():.4f}  {tok_s:,.0f} tokens/s  "
                  f"{1e3 * elapsed / step:.0f} ms/step", flush=True)

    model.eval()
    with torch.no_grad():
        hx, hy = next(batches(held, args.context, 4096, torch.Generator().manual_seed(1)))
        eval_loss = torch.nn.functional.cross_entropy(model(hx), hy).item()
        print(f"held-out loss {eval_loss:.4f} (uniform guess: {torch.log(torch.tensor(256.0)).item():.4f})")
        prompt = b"In the beginning God created the heaven and the earth."
        ctx = list(prompt[-args.context:])
        out = bytearray()
        g = torch.Generator().manual_seed(args.seed)
        for _ in range(240):
            logits = model(torch.tensor([ctx[-args.context:]]))[0]
            nxt = torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=g).item()
            out.append(nxt)
            ctx.append(nxt)
        print("sample:", prompt.decode() + out.decode("utf-8", errors="replace"))


if __name__ == "__main__":
    main()
