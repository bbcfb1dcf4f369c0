"""Tiled (FlashAttention-2 style) attention against the default path: peak memory and time.

    python benchmarks/bench_tiled.py [--mem-T 1024 ... 16384] [--time-T 1024 4096 8192]
                                     [--block-size 128] [--max-default-gib 3] [--repeat 2]
                                     [--threads 1] [--quick] [--json FILE] [--plot FILE]
    python benchmarks/bench_tiled.py --from-json FILE --plot FILE     (redraw only)

Shapes as in issue 13: B = 1, H = 4, D = 64, float32, self-attention-sized ``(1, 4, T, 64)``
queries, keys, values and upstream gradient (made before measuring).  One *step* is one
forward + backward of the pair (``scaled_dot_product_attention`` and its backward, or
``tiled_attention`` and its backward), no mask.

* **Memory**: the peak that Python's ``tracemalloc`` sees during one step (NumPy reports its
  allocations to it), above what was allocated before the step.  The default path holds
  about two ``(B, H, T, T)`` arrays at its peak (the weights, and their gradient in the
  backward): ``8 B H T^2`` bytes in float32, 8 GiB at T = 16384.  Where that prediction is
  over ``--max-default-gib`` the default path is **not run** (the machine is shared); the
  table then shows the T^2 extrapolation from the largest T measured, marked ``~``.
* **Time**: best of ``--repeat`` interleaved runs of each path (both see the same load), and
  the ratio tiled / default; also the causal variants (the tiled path skips the tiles above
  the diagonal, the default path masks a full ``T x T`` matrix).

The two outputs are compared at every timed T (max |difference|, float32).  Timings on a
shared machine are noisy: read the ratios, not the seconds.
"""
import argparse
import json
import os
import sys
import time
import tracemalloc


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mem-T", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--time-T", type=int, nargs="+", default=[1024, 4096, 8192])
    p.add_argument("--block-size", type=int, default=128, help="tile size B_q = B_k (default 128)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64, help="head size D")
    p.add_argument("--max-default-gib", type=float, default=3.0,
                   help="skip the default path where its predicted peak is larger (default 3 GiB)")
    p.add_argument("--repeat", type=int, default=2, help="timed repetitions per T (default 2)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--no-causal", action="store_true", help="do not time the causal variants")
    p.add_argument("--quick", action="store_true", help="small T, one repeat (a smoke run)")
    p.add_argument("--json", default=None, help="save the figures to this JSON file")
    p.add_argument("--plot", default=None, help="save memory and time against T to this PNG")
    p.add_argument("--from-json", default=None,
                   help="measure nothing: redraw --plot from a JSON file saved by --json")
    args = p.parse_args(argv)
    if args.quick:
        args.mem_T, args.time_T, args.repeat = [256, 512, 1024], [256, 512], 1
    return args


def predicted_default_bytes(T, H, itemsize=4):
    """The default path's peak, to leading order: two (1, H, T, T) arrays."""
    return 2 * H * T * T * itemsize


def main(argv=None):
    args = parse(argv)
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
        plot(result, args.plot or "tiled_bench.png")
        return result
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)          # must happen before NumPy is imported
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
    from npattention.attention.tiled import tiled_attention, tiled_attention_backward
    from npattention.backend import BACKEND, Generator, to_numpy, xp

    H, D, Bsz = args.heads, args.dim, args.block_size

    def default_step(q, k, v, g, causal=False):
        out, cache = scaled_dot_product_attention(q, k, v, is_causal=causal)
        scaled_dot_product_attention_backward(g, cache)
        return out

    def tiled_step(q, k, v, g, causal=False):
        out, cache = tiled_attention(q, k, v, is_causal=causal, block_size=Bsz)
        tiled_attention_backward(g, cache)
        return out

    def inputs(T):
        rng = Generator(T)
        return tuple(rng.normal((1, H, T, D), dtype=xp.float32) for _ in range(4))

    def peak_bytes(step, *a):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            step(*a)
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    def timed(step, *a):
        t0 = time.perf_counter()
        out = step(*a)
        if BACKEND == "cupy":
            xp.cuda.Device().synchronize()
        return time.perf_counter() - t0, out

    limit = args.max_default_gib * 2 ** 30
    result = {"B": 1, "H": H, "D": D, "dtype": "float32", "block_size": Bsz, "threads": args.threads,
              "memory": [], "time": []}

    print(f"B=1, H={H}, D={D}, float32, tiles {Bsz}x{Bsz}, backend {BACKEND}, {args.threads} BLAS thread(s); "
          "shared machine: read the ratios")
    print("\npeak memory of one forward + backward (tracemalloc, MiB above the inputs)")
    print(f"{'T':>6} {'default':>12} {'tiled':>9} {'tiled/default':>14}")
    measured = {}
    for T in args.mem_T:
        q, k, v, g = inputs(T)
        tiled = peak_bytes(tiled_step, q, k, v, g)
        if predicted_default_bytes(T, H) <= limit:
            default, note = peak_bytes(default_step, q, k, v, g), ""
            measured[T] = default
        elif measured:
            T0 = max(measured)
            default, note = measured[T0] * (T / T0) ** 2, "~"
        else:
            default, note = float(predicted_default_bytes(T, H)), "~"
        del q, k, v, g
        result["memory"].append({"T": T, "default_bytes": default, "default_measured": note == "",
                                 "tiled_bytes": tiled})
        shown = f"{note}{default / 2**20:.1f}"
        print(f"{T:>6} {shown:>12} {tiled / 2**20:>9.1f} {f'1/{default / tiled:.0f}':>14}")
    if any(not r["default_measured"] for r in result["memory"]):
        print(f"~ = not run: predicted over --max-default-gib {args.max_default_gib:g} GiB "
              f"(8 H T^2 bytes); T^2 extrapolation from the largest measured T")

    variants = [False] if args.no_causal else [False, True]
    print(f"\ntime of one forward + backward, best of {args.repeat} interleaved runs")
    print(f"{'T':>6} {'causal':>6} {'default s':>10} {'tiled s':>9} {'tiled/default':>14} {'max |diff|':>11}")
    for T in args.time_T:
        q, k, v, g = inputs(T)
        for causal in variants:
            runs = {"default": [], "tiled": []}
            for _ in range(args.repeat):         # interleaved: both paths see the same machine load
                seconds, ref = timed(default_step, q, k, v, g, causal)
                runs["default"].append(seconds)
                seconds, out = timed(tiled_step, q, k, v, g, causal)
                runs["tiled"].append(seconds)
                diff = float(abs(to_numpy(out) - to_numpy(ref)).max())
                del ref, out
            d, t = min(runs["default"]), min(runs["tiled"])
            result["time"].append({"T": T, "causal": causal, "default_s": d, "tiled_s": t, "max_abs_diff": diff})
            print(f"{T:>6} {str(causal):>6} {d:>10.2f} {t:>9.2f} {t / d:>14.2f} {diff:>11.1e}")
        del q, k, v, g

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"figures saved to {args.json}")
    if args.plot:
        plot(result, args.plot)
    return result


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = result["memory"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    T = [r["T"] for r in mem]
    meas = [r for r in mem if r["default_measured"]]
    extra = [r for r in mem if not r["default_measured"]]
    if extra:
        ref = meas[-1:] + extra
        ax.loglog([r["T"] for r in ref], [r["default_bytes"] / 2**20 for r in ref], "o--", color="C0", mfc="white",
                  label="default path (T² extrapolation, not run)")
    ax.loglog([r["T"] for r in meas], [r["default_bytes"] / 2**20 for r in meas], "o-", color="C0",
              label="default path (measured)")
    ax.loglog(T, [r["tiled_bytes"] / 2**20 for r in mem], "s-", color="C1",
              label=f"tiled, {result['block_size']}x{result['block_size']} tiles")
    ax.set_xticks(T)
    ax.set_xticklabels([str(t) for t in T])
    ax.minorticks_off()
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("peak memory of forward + backward, MiB")
    ax.set_title("memory: T² against T", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[1]
    for causal, style in ((False, "-"), (True, ":")):
        rows = [r for r in result["time"] if r["causal"] == causal]
        if not rows:
            continue
        tag = " (causal)" if causal else ""
        ax.loglog([r["T"] for r in rows], [r["default_s"] for r in rows], "o" + style, color="C0",
                  label="default" + tag)
        ax.loglog([r["T"] for r in rows], [r["tiled_s"] for r in rows], "s" + style, color="C1", label="tiled" + tag)
    Tt = sorted({r["T"] for r in result["time"]})
    ax.set_xticks(Tt)
    ax.set_xticklabels([str(t) for t in Tt])
    ax.minorticks_off()
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("forward + backward, seconds")
    ax.set_title("time (best of the interleaved runs)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"B=1, H={result['H']}, D={result['D']}, float32, {result['threads']} BLAS thread(s), "
                 "shared 2-core machine", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure saved to {path}")


if __name__ == "__main__":
    main()
