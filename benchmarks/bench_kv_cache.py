"""Generation with and without the KV cache: time and the cache's memory.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_kv_cache.py            # 256 tokens, GPT 4 x 128
    python benchmarks/bench_kv_cache.py --tokens 64 128 256 --batch 4 --figure docs/figures/kv_cache_bench.png

For a decoder-only GPT (random weights: the cost does not depend on them) and for the
encoder-decoder Transformer, generate ``N`` tokens greedily from a 1-token prompt, once
recomputing the whole prefix at every step (``use_cache=False``) and once with the KV
cache, in the same run (the machine may be shared: compare the ratio, not the seconds).
Both runs must produce the same tokens (checked).  Printed per length: seconds without /
with the cache, their ratio (speed-up), and the cache's filled memory (keys and values of
every layer: ``2 * layers * B * H * N * D * 4 bytes`` in float32) next to the size of the
model's parameters.

Without the cache step ``t`` costs ``O(t)`` rows of every layer (``O(N^2)`` in all, plus the
``t x t`` attention); with it one row (``O(N)`` in all, plus a ``1 x t`` attention).  So the
speed-up grows about linearly with ``N``.
"""
import argparse
import os
import sys
import time


def _time(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--figure", default=None, help="save a PNG of time vs tokens")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from npattention.backend import manual_seed, to_numpy, xp
    from npattention.decoding import GPTState, TransformerDecoderState, generate, greedy_search
    from npattention.gpt import GPT
    from npattention.transformer import Transformer

    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"cpu count {os.cpu_count()}; batch {args.batch}, {args.layers} layers, d_model {args.d_model}, "
          f"{args.heads} heads, float32")
    N_max = max(args.tokens)
    manual_seed(0)
    gpt = GPT(50, N_max + 1, n_layer=args.layers, n_head=args.heads, d_model=args.d_model)
    manual_seed(0)
    tr = Transformer(50, 50, d_model=args.d_model, nhead=args.heads, num_encoder_layers=args.layers,
                     num_decoder_layers=args.layers, dim_feedforward=4 * args.d_model, dropout=0.0,
                     max_len=N_max + 2)
    prompt = xp.full((args.batch, 1), 7, dtype=xp.int64)
    src = xp.asarray([[5, 6, 7, 8, 9, 10, 11, 2]] * args.batch, dtype=xp.int64)
    rows = {"gpt": [], "transformer": []}
    head = (f"{'model':<12} {'tokens':>6} {'no cache s':>10} {'cache s':>8} {'speed-up':>8} "
            f"{'cache KiB':>10} {'params KiB':>10}")
    print(head)
    print("-" * len(head))
    for N in args.tokens:
        t_full, a = _time(lambda: generate(gpt, prompt, N, temperature=0, use_cache=False), args.repeats)
        t_cache, b = _time(lambda: generate(gpt, prompt, N, temperature=0, use_cache=True), args.repeats)
        assert to_numpy(a).tolist() == to_numpy(b).tolist(), "cached and uncached generations differ"
        state = GPTState(gpt, args.batch, N + 1)
        state.step(b[:, :N + 1])
        kib, pkib = state.cache.nbytes / 1024, gpt.num_parameters() * 4 / 1024
        rows["gpt"].append((N, t_full, t_cache, kib))
        print(f"{'GPT':<12} {N:>6} {t_full:>10.2f} {t_cache:>8.2f} {t_full / t_cache:>8.1f} {kib:>10.0f} "
              f"{pkib:>10.0f}", flush=True)
        # the Transformer never emits <eos> by construction here: eos_idx=-1
        t_full, a = _time(lambda: greedy_search(tr, src, N, eos_idx=-1, use_cache=False), args.repeats)
        t_cache, b = _time(lambda: greedy_search(tr, src, N, eos_idx=-1, use_cache=True), args.repeats)
        assert to_numpy(a).tolist() == to_numpy(b).tolist(), "cached and uncached decodings differ"
        state = TransformerDecoderState(tr, src, max_len=N)
        state.step(xp.concatenate([xp.ones((args.batch, 1), dtype=xp.int64), b[:, :N - 1]], axis=1))
        kib, pkib = state.cache.nbytes / 1024, tr.num_parameters() * 4 / 1024
        rows["transformer"].append((N, t_full, t_cache, kib))
        print(f"{'Transformer':<12} {N:>6} {t_full:>10.2f} {t_cache:>8.2f} {t_full / t_cache:>8.1f} {kib:>10.0f} "
              f"{pkib:>10.0f}", flush=True)
    print("-" * len(head))
    print("cache KiB: keys and values of every self-attention layer after all tokens (the Transformer also "
          "keeps the encoder output's cross-attention keys/values, not counted)")

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for name, style in (("gpt", "-"), ("transformer", "--")):
            r = rows[name]
            n = [x[0] for x in r]
            axes[0].plot(n, [x[1] for x in r], "o" + style, color="C3", label=f"{name}, recompute prefix")
            axes[0].plot(n, [x[2] for x in r], "s" + style, color="C0", label=f"{name}, KV cache")
            axes[1].plot(n, [x[3] for x in r], "o" + style, label=name)
        axes[0].set_xlabel("tokens generated N")
        axes[0].set_ylabel("seconds (greedy, whole generation)")
        axes[0].set_title("Generation time")
        axes[0].legend(fontsize=8)
        axes[1].set_xlabel("tokens generated N")
        axes[1].set_ylabel("KiB")
        axes[1].set_title("KV cache memory (float32): grows linearly in N")
        axes[1].legend(fontsize=8)
        fig.suptitle(f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads, batch {args.batch} "
                     f"(shared CPU: compare within the run)")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=100)
        print(f"saved {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
