"""Time MultiheadAttention forward + backward; compare with sgemm and (if installed) PyTorch.

    python benchmarks/bench_mha.py [--threads 1] [--repeat 10] [--quick] [--no-torch] [--cpu-time] [--ablation]

For each shape (and kind: self-attention, masked self-attention, masked cross-attention) it prints the best (minimum) and median time of one forward + backward
step of ``MultiheadAttention(x, x, x)`` (self-attention: the fused QKV path; the three
input gradients are summed, as ``SelfAttention`` does), the achieved GFLOP/s counting
only the matrix products, the fraction of this machine's float32 matmul speed (a big
square sgemm timed in the same loop), and -- when ``torch`` is importable -- the ratio
to ``torch.nn.MultiheadAttention`` forward + backward on the CPU with the same thread
count.  PyTorch is never a dependency of npattention: install it in a separate virtual
environment to get the ratio.

FLOPs (multiply-add = 2), with N = B*T tokens and D = E/H:
forward F = 2*N*E*3E (QKV) + 2*N*E*E (output) + 2 * 2*B*H*T*T*D (scores, context);
backward = 2F (each product has two gradient products); one step = 3F.

Timings are the minimum over ``--repeat`` interleaved runs (ours, then PyTorch), which is
the most robust figure on a shared machine; the median shows the noise.
"""
import argparse
import os
import sys
import time


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS / PyTorch threads (default 1)")
    p.add_argument("--repeat", type=int, default=10, help="timed repetitions per shape (default 10)")
    p.add_argument("--quick", action="store_true", help="small shapes, 3 repeats (a smoke test)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process's CPU time (time.process_time) instead of the wall clock: "
                        "steadier on a loaded machine; meaningful with --threads 1 only")
    p.add_argument("--ablation", action="store_true",
                   help="also time the un-optimised variants (textbook softmax, unfused QKV) on the first and third shapes")
    return p.parse_args(argv)


# (B, T, E, H, kind), float32.  kind: "self" (x, x, x); "self-masked": causal mask and a key
# padding mask (a decoder's self-attention); "cross-masked": queries x, keys and values from a
# second (B, T, E) input with a key padding mask (encoder-decoder attention).  The small shapes
# are the main demo's Transformer (B64, T about 24, d_model 64, 4 heads): per-call overhead.
SHAPES = [(8, 256, 256, 8, "self"), (1, 2048, 256, 4, "self"),
          (64, 24, 64, 4, "self"), (64, 24, 64, 4, "self-masked"), (64, 24, 64, 4, "cross-masked")]
QUICK_SHAPES = [(2, 32, 64, 4, "self"), (1, 128, 64, 2, "self"), (4, 12, 32, 4, "self-masked"),
                (4, 12, 32, 4, "cross-masked")]


def step_flops(B, T, E, H, kind="self"):
    N = B * T
    forward = 2 * N * E * 3 * E + 2 * N * E * E + 2 * (2 * B * T * T * E)   # H*D = E
    return 3 * forward


def best_and_median(times):
    times = sorted(times)
    return times[0], times[len(times) // 2]


def textbook_sdpa(xp, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, training=True,
                  attn_bias=None):
    """The straightforward version (no dropout, no bias): scores scaled after the product, the
    shared out-of-place ``softmax`` / ``softmax_backward``.  Same numbers, more memory traffic.
    (tests/test_attention_fast_paths.py holds the full reference, checked against the shipped path.)"""
    from types import SimpleNamespace

    from npattention.masks import causal_mask, combine_masks
    from npattention.softmax import softmax

    scale = 1.0 / query.shape[-1] ** 0.5
    if is_causal:
        attn_mask = combine_masks(attn_mask, causal_mask(query.shape[-2], key.shape[-2]))
    scores = query @ xp.swapaxes(key, -1, -2) * scale
    weights = softmax(scores, mask=attn_mask)
    context = weights @ value
    return context, SimpleNamespace(query=query, key=key, value=value, weights=weights, scale=scale)


def textbook_sdpa_backward(xp, grad_output, cache):
    from npattention.softmax import softmax_backward

    dv = xp.swapaxes(cache.weights, -1, -2) @ grad_output
    dweights = grad_output @ xp.swapaxes(cache.value, -1, -2)
    dscores = softmax_backward(dweights, cache.weights) * cache.scale
    return dscores @ cache.key, xp.swapaxes(dscores, -1, -2) @ cache.query, dv


def ablation(xp, g, shape, repeat, timed):
    """Time the shipped step against the un-optimised variants, interleaved."""
    import npattention.attention.multihead as mh

    B, T, E, H, _ = shape
    m = mh.MultiheadAttention(E, H)
    x, grad = g.normal((B, T, E)), g.normal((B, T, E))
    shipped = (mh.scaled_dot_product_attention, mh.scaled_dot_product_attention_backward)
    textbook = (lambda *a, **k: textbook_sdpa(xp, *a, **k), lambda d, c: textbook_sdpa_backward(xp, d, c))

    def variant(pair, fused):
        def run():
            mh.scaled_dot_product_attention, mh.scaled_dot_product_attention_backward = pair
            try:
                m(x, x, x) if fused else m(x, x.copy(), x.copy())
                sum(m.backward(grad))
            finally:
                mh.scaled_dot_product_attention, mh.scaled_dot_product_attention_backward = shipped
        return run

    fns = {"shipped (fused QKV, in-place softmax)": variant(shipped, True),
           "separate q/k/v projections": variant(shipped, False),
           "textbook softmax + softmax_backward": variant(textbook, True),
           "textbook softmax, separate projections": variant(textbook, False)}
    runs = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            runs[name].append(timed(fn))
    base = min(runs["shipped (fused QKV, in-place softmax)"])
    print(f"\nablation at (B, T, E, H) = {shape}: best-of-{repeat} ms, and relative to the shipped version")
    for name, times in runs.items():
        print(f"  {name:<42} {min(times) * 1e3:>7.1f} ms  x{min(times) / base:.2f}")


def main(argv=None):
    args = parse(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)          # must happen before NumPy is imported
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np

    from npattention.attention.multihead import MultiheadAttention
    from npattention.backend import BACKEND, Generator, to_numpy, xp

    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    shapes, repeat = (QUICK_SHAPES, 3) if args.quick else (SHAPES, args.repeat)

    def sync():
        if BACKEND == "cupy":
            xp.cuda.Device().synchronize()

    clock = time.process_time if args.cpu_time else time.perf_counter

    def timed(fn):
        sync()
        t0 = clock()
        fn()
        sync()
        return clock() - t0

    # The machine's float32 matmul speed: a big square sgemm, timed again inside every
    # shape's loop (interleaved), so that it sees the same machine load as our step.
    n = 256 if args.quick else 1024
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=xp.float32)

    def sgemm():
        a @ a

    sgemm()
    print(f"backend {BACKEND}, {args.threads} thread(s); reference: float32 sgemm {n}x{n} "
          f"(%sgemm = our GFLOP/s / sgemm GFLOP/s, both best-of-{repeat}, interleaved)")
    if torch is None:
        print("PyTorch not importable: no ratio (install torch in a separate venv to get one)")
    else:
        print(f"PyTorch {torch.__version__} for comparison (CPU, {torch.get_num_threads()} thread(s))")

    header = (f"{'B':>2} {'T':>5} {'E':>4} {'H':>2} {'kind':>12} | {'ours ms':>8} {'median':>7} {'GFLOP/s':>8} "
              f"{'sgemm':>6} {'%sgemm':>6}"
              + (f" | {'torch ms':>8} {'median':>7} {'ours/torch':>10} {'torch(w) ms':>11}" if torch else ""))
    print(header)
    print("-" * len(header))
    for B, T, E, H, kind in shapes:
        g = Generator(0)
        m = MultiheadAttention(E, H)
        x, grad, mem = g.normal((B, T, E)), g.normal((B, T, E)), g.normal((B, T, E))
        lengths = [T - (b % 4) * max(1, T // 8) for b in range(B)]     # some padded sequences
        kpm = xp.arange(T)[None, :] >= xp.asarray(lengths)[:, None]     # (B, T), True = padding
        causal = xp.triu(xp.ones((T, T), dtype=bool), k=1)

        def ours(m=m, x=x, grad=grad, mem=mem, kpm=kpm, kind=kind):
            if kind == "self":
                m(x, x, x, need_weights=False)
            elif kind == "self-masked":
                m(x, x, x, key_padding_mask=kpm, is_causal=True, need_weights=False)
            else:
                m(x, mem, mem, key_padding_mask=kpm, need_weights=False)
            dq, dk, dv = m.backward(grad)
            return (dq + dk + dv) if kind != "cross-masked" else (dq, dk + dv)   # the gradients that add up

        runs = {"ours": [], "sgemm": []}
        if torch is not None:
            tm = torch.nn.MultiheadAttention(E, H, batch_first=True)
            tx = torch.tensor(to_numpy(x), requires_grad=True)
            tmem = torch.tensor(to_numpy(mem), requires_grad=True)
            tg = torch.tensor(to_numpy(grad))
            tkpm, tcausal = torch.tensor(to_numpy(kpm)), torch.tensor(to_numpy(causal))

            def theirs(need_weights, tm=tm, tx=tx, tmem=tmem, tg=tg, kind=kind, tkpm=tkpm, tcausal=tcausal):
                def run():
                    tx.grad = tmem.grad = None
                    if kind == "self":
                        out, _ = tm(tx, tx, tx, need_weights=need_weights)
                    elif kind == "self-masked":
                        out, _ = tm(tx, tx, tx, key_padding_mask=tkpm, attn_mask=tcausal, is_causal=True,
                                    need_weights=need_weights)
                    else:
                        out, _ = tm(tx, tmem, tmem, key_padding_mask=tkpm, need_weights=need_weights)
                    out.backward(tg)
                return run

            runs.update(torch=[], torch_w=[])
            fns = {"ours": ours, "sgemm": sgemm, "torch": theirs(False), "torch_w": theirs(True)}
        else:
            fns = {"ours": ours, "sgemm": sgemm}
        for fn in fns.values():       # warm up
            fn()
        for _ in range(repeat):       # interleaved, so that load from other processes hits both
            for name, fn in fns.items():
                runs[name].append(timed(fn))
        best, med = best_and_median(runs["ours"])
        gflops = step_flops(B, T, E, H) / best / 1e9
        peak = 2 * n ** 3 / min(runs["sgemm"]) / 1e9
        line = (f"{B:>2} {T:>5} {E:>4} {H:>2} {kind:>12} | {best * 1e3:>8.2f} {med * 1e3:>7.2f} {gflops:>8.1f} "
                f"{peak:>6.1f} {gflops / peak:>6.0%}")
        if torch is not None:
            tbest, tmed = best_and_median(runs["torch"])
            wbest, _ = best_and_median(runs["torch_w"])
            line += f" | {tbest * 1e3:>8.2f} {tmed * 1e3:>7.2f} {best / tbest:>10.2f} {wbest * 1e3:>11.2f}"
        print(line)
    if args.ablation:   # a large shape and the demo's small one (where per-call overhead shows)
        for shape in (shapes[0], shapes[2]):
            ablation(xp, Generator(0), shape, repeat, timed)
    if torch is not None:
        print("ours/torch < 1: npattention is faster.  torch ms: need_weights=False (PyTorch's fused SDPA "
              "kernel); torch(w): need_weights=True (its explicit softmax path).  Ours: need_weights=False.")


if __name__ == "__main__":
    main()
