"""Truncated self-attention: the band-only version against the masked full version.

    python benchmarks/bench_band.py [--T 4096] [--window 32] [--heads 4] [--dim 64] [--repeat 3] [--quick]

For each sequence length it times one forward + backward of attention restricted to
``|i - j| <= w`` two ways, on the same ``(1, H, T, D)`` float32 queries, keys and values:

* **masked full**: ``scaled_dot_product_attention`` with ``band_mask(T, w)``: ``T x T``
  scores, most of them masked (what ``LocalSelfAttention(impl="masked")`` does);
* **band**: ``band_attention``: only the ``T x (2w + 1)`` band (``impl="band"``).

It prints the best time of ``--repeat`` interleaved runs and the peak memory that Python's
``tracemalloc`` sees during forward + backward (NumPy allocations are traced), and the ratios
full / band.  It also checks that the two give the same context (float32 tolerance).
Timings on a shared machine are noisy: the ratio of two versions timed in the same run is the
figure to read.  ``--plot FILE`` saves time and memory against T (docs/band_attention.md).
"""
import argparse
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="sequence lengths")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64, help="head size D")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1; set before NumPy loads)")
    p.add_argument("--quick", action="store_true", help="T = 256, 512 and one repeat (a smoke run)")
    p.add_argument("--plot", default=None, help="save a time / memory figure to this PNG")
    args = p.parse_args(argv)
    if args.quick:
        args.T, args.repeat = [256, 512], 1
    return args


def run(args):
    from npattention.attention.band import band_attention, band_attention_backward
    from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
    from npattention.attention.self_attention import band_mask
    from npattention.backend import Generator, to_numpy

    def full_step(q, k, v, mask, dout):
        out, cache = scaled_dot_product_attention(q, k, v, attn_mask=mask)
        scaled_dot_product_attention_backward(dout, cache)
        return out

    def band_step(q, k, v, w, dout):
        out, cache = band_attention(q, k, v, w)
        band_attention_backward(dout, cache)
        return out

    def measure(fn):
        tracemalloc.start()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return out, seconds, peak

    rows = []
    w = args.window
    print(f"band attention vs masked full attention, window w={w}, H={args.heads}, D={args.dim}, float32, "
          f"forward + backward; best of {args.repeat}; peak memory by tracemalloc; "
          f"{os.environ.get('OPENBLAS_NUM_THREADS')} BLAS thread(s)")
    print(f"{'T':>6} {'full ms':>9} {'band ms':>9} {'time ratio':>10} {'full MiB':>9} {'band MiB':>9} "
          f"{'mem ratio':>9}  max |diff|")
    for T in args.T:
        rng = Generator(T)
        q, k, v, dout = (rng.normal((1, args.heads, T, args.dim)) for _ in range(4))
        mask = band_mask(T, w)
        t_full, t_band, m_full, m_band = [], [], 0, 0
        for _ in range(args.repeat):          # interleaved: both see the same machine load
            out_f, s, m = measure(lambda: full_step(q, k, v, mask, dout))
            t_full.append(s)
            m_full = max(m_full, m)
            out_b, s, m = measure(lambda: band_step(q, k, v, w, dout))
            t_band.append(s)
            m_band = max(m_band, m)
        diff = float(abs(to_numpy(out_f) - to_numpy(out_b)).max())
        row = (T, min(t_full), min(t_band), m_full, m_band, diff)
        rows.append(row)
        print(f"{T:>6} {1e3 * row[1]:>9.1f} {1e3 * row[2]:>9.1f} {row[1] / row[2]:>10.1f} {m_full / 2**20:>9.1f} "
              f"{m_band / 2**20:>9.1f} {m_full / m_band:>9.1f}  {diff:.1e}")
    return rows


def plot(rows, path, window):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    T = [r[0] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].loglog(T, [1e3 * r[1] for r in rows], "o-", label="masked full (T x T)")
    axes[0].loglog(T, [1e3 * r[2] for r in rows], "s-", label=f"band (T x {2 * window + 1})")
    axes[0].set_xlabel("sequence length T")
    axes[0].set_ylabel("forward + backward, ms")
    axes[1].loglog(T, [r[3] / 2**20 for r in rows], "o-", label="masked full")
    axes[1].loglog(T, [r[4] / 2**20 for r in rows], "s-", label="band")
    axes[1].set_xlabel("sequence length T")
    axes[1].set_ylabel("peak memory, MiB (tracemalloc)")
    for ax in axes:
        ax.set_xticks(T)
        ax.set_xticklabels([str(t) for t in T])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"truncated self-attention, window {window}: the full version grows as T^2, the band as T",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure saved to {path}")


def main(argv=None):
    args = parse(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))      # before the first NumPy import
    rows = run(args)
    last = rows[-1]
    print(f"at T={last[0]}: band is {last[1] / last[2]:.1f}x faster and uses {last[3] / last[4]:.1f}x less peak "
          f"memory than the masked full version (shared machine: read the ratios, not the times)")
    if args.plot:
        plot(rows, args.plot, args.window)


if __name__ == "__main__":
    main()
