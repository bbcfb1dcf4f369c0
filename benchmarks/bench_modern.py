"""Linear vs softmax attention (time and peak memory against T) and the KV-cache size of
grouped-query attention.

    python benchmarks/bench_modern.py [--T 256 1024 4096] [--heads 4] [--dim 16] [--repeat 3] [--quick]

* **Linear vs softmax**: one forward + backward of ``scaled_dot_product_attention`` and of
  ``linear_attention`` (bidirectional, and causal: the running-sum loop) on ``(1, H, T, D)``
  float32 inputs; best of ``--repeat`` interleaved runs (both see the same load), the ratios,
  and the peak memory Python's ``tracemalloc`` sees during the step (NumPy reports its
  allocations to it).  Softmax attention's peak grows as ``T^2``, linear attention's as ``T``.
* **KV cache**: bytes per layer of ``GroupedQueryAttention(E=512, H=8, H_kv)`` for 4096 float32
  tokens, ``H_kv`` = 8 (multi-head), 4, 2, 1 (multi-query).

Timings on a shared machine are noisy: read the ratios, not the seconds.
"""
import argparse
import os
import sys
import time
import tracemalloc


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=16, help="head size D")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke run)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.quick:
        args.T, args.repeat = [64, 128], 1
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from npattention.attention import (GroupedQueryAttention, linear_attention, linear_attention_backward,
                                       scaled_dot_product_attention, scaled_dot_product_attention_backward)
    from npattention.backend import Generator, xp

    rng = Generator(0)

    def softmax_step(q, k, v, g):
        out, cache = scaled_dot_product_attention(q, k, v)
        scaled_dot_product_attention_backward(g, cache)

    def linear_step(q, k, v, g, causal=False):
        out, cache = linear_attention(q, k, v, causal=causal)
        linear_attention_backward(g, cache)

    steps = {"softmax": softmax_step, "linear": linear_step,
             "linear causal": lambda *a: linear_step(*a, causal=True)}
    print(f"one forward + backward, (1, {args.heads}, T, {args.dim}) float32; best of {args.repeat}")
    print(f"{'T':>6} | " + " | ".join(f"{n:>22}" for n in steps) + " | softmax/linear time")
    for T in args.T:
        q, k, v, g = (rng.normal((1, args.heads, T, args.dim), dtype=xp.float32) for _ in range(4))
        best = {n: float("inf") for n in steps}
        peak = {}
        for _ in range(args.repeat):            # interleaved: every variant sees the same load
            for name, step in steps.items():
                t0 = time.perf_counter()
                step(q, k, v, g)
                best[name] = min(best[name], time.perf_counter() - t0)
        for name, step in steps.items():
            tracemalloc.start()
            step(q, k, v, g)
            peak[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        cells = [f"{best[n] * 1e3:8.1f} ms {peak[n] / 2**20:8.2f} MiB" for n in steps]
        print(f"{T:>6} | " + " | ".join(cells) + f" | {best['softmax'] / best['linear']:6.1f}x")

    print("\nKV cache per layer, E=512, H=8 (D=64), 4096 float32 tokens, batch 1")
    for hkv in (8, 4, 2, 1):
        m = GroupedQueryAttention(512, 8, hkv)
        print(f"  num_kv_heads={hkv}: {m.kv_cache_nbytes(4096, dtype=xp.float32) / 2**20:5.2f} MiB"
              f"  ({m.groups} query heads per key/value head)")


if __name__ == "__main__":
    main()
