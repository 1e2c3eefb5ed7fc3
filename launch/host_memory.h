#pragma once
// Keep freed host memory in the process for the next step instead of handing it back to the kernel.
//
// A training step allocates and frees the same large tensors every time (activations, gradients, packed GEMM
// panels). glibc's malloc serves blocks above its mmap threshold with fresh mmaps and trims the heap's top
// once enough of it is free, so every step faulted its big tensors in again, page by page, zeroed by the
// kernel: measured on nibble-train (12.9M model, nvfp4, 1 thread, 6 steps) 633k page faults, 227k with the
// settings below (the rest is the first step's), ~100 ms of a ~1.5 s step. This is what torch's own CUDA
// caching allocator does on the GPU and what jemalloc/tcmalloc do for torch on CPUs. The cost: the process
// keeps its peak host footprint (the memory account measures allocations, not RSS, so it is unaffected).
namespace nibble::launch {

// Largest fixed mmap threshold glibc accepts on 64-bit (32 MiB) and no heap trimming. No-op off glibc.
void keep_freed_host_memory();

}  // namespace nibble::launch
