"""Bytes moved per step by one TP+SP transformer block's linears (column QKV, row out, column gate/up, row down)
under each recipe: the sequence-parallel all-gathers of x move BF16 activations under the bf16 recipe and
quantized bytes (FP8 / MXFP8 / NVFP4 codes + scales) under the others; the row linears' backward all-gathers of
the output gradient move its quantized copies where that is exact and smaller than the gradient (fp8_current,
and NVFP4 -- the preset's stochastically rounded gradients draw each element's bits by its place in the whole
tensor, so slices quantized apart gather to the whole tensor's copies), else the BF16 gradient (mxfp8 needs
both copies, 2.06 bytes an element). The
reduce-scatters stay in the activation dtype. Counted by nibble.tensor_parallel's byte meter: the input buffer of
every collective on this rank (bytes this rank contributes), forward and backward of one step.

    python benchmarks/bench_tp_bytes.py [--np 2] [--tokens 512] [--hidden 512]
(re-launches itself under mpirun; or run it under mpirun directly).
"""
import argparse
import os
import shutil
import subprocess
import sys


def launch(args):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
               OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1")
    cmd = [shutil.which("mpirun") or "mpirun", "-np", str(args.np), "--oversubscribe", "--bind-to", "none",
           sys.executable, os.path.abspath(__file__), "--tokens", str(args.tokens), "--hidden", str(args.hidden)]
    sys.exit(subprocess.call(cmd, env=env))


def run(args):
    import torch
    import nibble
    torch.set_num_threads(1)
    TP = nibble.tensor_parallel
    rt = nibble.parallel.init()
    n = rt.world_size
    mesh = nibble.parallel.Mesh(tp=n)
    H, S, F = args.hidden, args.tokens, 2 * args.hidden
    dt = torch.bfloat16
    if rt.rank == 0:
        print(f"TP+SP block linears, tp={n}, {S} tokens x hidden {H} (ffn {F}), bfloat16 activations; "
              f"bytes this rank hands to collectives per step")
        print(f"{'recipe':<16} {'forward':>12} {'backward':>12} {'total':>12} {'vs bf16':>8}")
    base = None
    recipes = [nibble.Recipe(name) for name in ("bf16", "fp8_current", "mxfp8", "nvfp4")]
    recipes.append(nibble.Recipe.custom("nvfp4_rne_grads", "nvfp4", None, "nvfp4", None, "rne"))
    for recipe in recipes:
        mk = lambda cls, i, o, name: cls(i, o, mesh.tp, sequence_parallel=True, recipe=recipe, name=name, dtype=dt)
        qkv, out = mk(TP.ColumnParallelLinear, H, 3 * H, "qkv"), mk(TP.RowParallelLinear, H, H, "out")
        gate, up = mk(TP.ColumnParallelLinear, H, F, "gate"), mk(TP.ColumnParallelLinear, H, F, "up")
        down = mk(TP.RowParallelLinear, F, H, "down")
        h = torch.randn(S // n, H, dtype=dt, requires_grad=True)
        TP.reset_communicated_bytes()
        a = qkv(h)
        h2 = h + out(a[:, : H // n])  # stands in for attention: the projections and their collectives are what count
        m = torch.nn.functional.silu(gate(h2)) * up(h2)
        y = h2 + down(m)
        fwd = TP.communicated_bytes()
        y.float().sum().backward()
        total = TP.communicated_bytes()
        base = base or total
        if rt.rank == 0:
            print(f"{recipe.name:<16} {fwd:>12,} {total - fwd:>12,} {total:>12,} {total / base:>8.2f}")
    nibble.parallel.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    a = p.parse_args()
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        run(a)
    else:
        launch(a)
