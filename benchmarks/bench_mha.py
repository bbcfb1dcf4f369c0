"""Time MultiheadAttention forward + backward; compare with sgemm and (if installed) PyTorch.

    python benchmarks/bench_mha.py [--threads 1] [--repeat 10] [--quick] [--no-torch]

For each shape it prints the best (minimum) and median time of one forward + backward
step of ``MultiheadAttention(x, x, x)`` (self-attention: the fused QKV path; the three
input gradients are summed, as ``SelfAttention`` does), the achieved GFLOP/s counting
only the matrix products, the fraction of this machine's float32 matmul speed (a big
square sgemm measured in the same run), and -- when ``torch`` is importable -- the ratio
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
    return p.parse_args(argv)


SHAPES = [(8, 256, 256, 8), (1, 2048, 256, 4)]   # (B, T, E, H), float32
QUICK_SHAPES = [(2, 32, 64, 4), (1, 128, 64, 2)]


def step_flops(B, T, E, H):
    N = B * T
    forward = 2 * N * E * 3 * E + 2 * N * E * E + 2 * (2 * B * T * T * E)   # H*D = E
    return 3 * forward


def best_and_median(times):
    times = sorted(times)
    return times[0], times[len(times) // 2]


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

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    # The machine's float32 matmul speed: a big square sgemm.
    n = 512 if args.quick else 2048
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=xp.float32)
    a @ a
    sgemm = 2 * n ** 3 / min(timed(lambda: a @ a) for _ in range(5)) / 1e9
    print(f"backend {BACKEND}, {args.threads} thread(s); float32 sgemm {n}x{n}: {sgemm:.1f} GFLOP/s")
    if torch is None:
        print("PyTorch not importable: no ratio (install torch in a separate venv to get one)")
    else:
        print(f"PyTorch {torch.__version__} for comparison (CPU, {torch.get_num_threads()} thread(s))")

    header = (f"{'B':>2} {'T':>5} {'E':>4} {'H':>2} | {'ours ms':>8} {'median':>7} {'GFLOP/s':>8} {'%sgemm':>7}"
              + (f" | {'torch ms':>8} {'median':>7} {'ours/torch':>10} {'torch(w) ms':>11}" if torch else ""))
    print(header)
    print("-" * len(header))
    for B, T, E, H in shapes:
        g = Generator(0)
        m = MultiheadAttention(E, H)
        x, grad = g.normal((B, T, E)), g.normal((B, T, E))

        def ours():
            m(x, x, x, need_weights=False)
            dq, dk, dv = m.backward(grad)
            return dq + dk + dv               # self-attention: the three gradients add up

        runs = {"ours": []}
        if torch is not None:
            tm = torch.nn.MultiheadAttention(E, H, batch_first=True)
            tx = torch.tensor(to_numpy(x), requires_grad=True)
            tg = torch.tensor(to_numpy(grad))

            def theirs(need_weights):
                def run():
                    tx.grad = None
                    out, _ = tm(tx, tx, tx, need_weights=need_weights)
                    out.backward(tg)
                return run

            runs.update(torch=[], torch_w=[])
            fns = {"ours": ours, "torch": theirs(False), "torch_w": theirs(True)}
        else:
            fns = {"ours": ours}
        for fn in fns.values():       # warm up
            fn()
        for _ in range(repeat):       # interleaved, so that load from other processes hits both
            for name, fn in fns.items():
                runs[name].append(timed(fn))
        best, med = best_and_median(runs["ours"])
        gflops = step_flops(B, T, E, H) / best / 1e9
        line = f"{B:>2} {T:>5} {E:>4} {H:>2} | {best * 1e3:>8.1f} {med * 1e3:>7.1f} {gflops:>8.1f} {gflops / sgemm:>7.0%}"
        if torch is not None:
            tbest, tmed = best_and_median(runs["torch"])
            wbest, _ = best_and_median(runs["torch_w"])
            line += f" | {tbest * 1e3:>8.1f} {tmed * 1e3:>7.1f} {best / tbest:>10.2f} {wbest * 1e3:>11.1f}"
        print(line)
    if torch is not None:
        print("ours/torch < 1: npattention is faster.  torch ms: need_weights=False (PyTorch's fused SDPA "
              "kernel); torch(w): need_weights=True (its explicit softmax path).  Ours: need_weights=False.")


if __name__ == "__main__":
    main()
