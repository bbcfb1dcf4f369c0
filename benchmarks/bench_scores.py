"""The six score functions, forward + backward, at a few sizes; and ConcatScore's
decomposition ``w_q . q_i + w_k . k_j + b`` against the literal "concatenate every pair,
then a linear layer" of note 004's rule 1.

    python benchmarks/bench_scores.py            # B=8, T=64/128/256, D=64
    python benchmarks/bench_scores.py --quick    # small sizes, a smoke test

Prints best-of-N wall times (ms) and ratios to DotScore.  Timings on a shared machine are
noisy; compare ratios, not absolute numbers.
"""
import argparse
import time

SIZES = [(8, 64, 64), (8, 128, 64), (8, 256, 64)]  # (B, T, D): Tq = Tk = T
QUICK = [(2, 16, 16), (2, 32, 16)]


def _best(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _naive_concat(weight, bias, q, k):
    """Rule 1 literally: build every pair [q_i; k_j] (B, Tq, Tk, Dq+Dk), then the linear layer."""
    from npattention.backend import xp

    B, Tq, Dq = q.shape
    Tk, Dk = k.shape[1], k.shape[2]
    pairs = xp.concatenate([xp.broadcast_to(q[:, :, None, :], (B, Tq, Tk, Dq)),
                            xp.broadcast_to(k[:, None, :, :], (B, Tq, Tk, Dk))], axis=-1)
    return pairs @ weight[0] + bias[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from npattention.attention import scores as S
    from npattention.backend import BACKEND, Generator, xp

    sizes = QUICK if args.quick else SIZES
    print(f"backend: {BACKEND}; forward + backward, best of {args.repeat}, milliseconds (ratio to DotScore)")
    names = ["Dot", "ScaledDot", "General", "Concat", "Additive(H=D)", "Cosine"]
    print(f"{'B, T, D':<14}" + "".join(f"{n:>20}" for n in names))
    for B, T, D in sizes:
        g = Generator(0)
        q, k = g.normal((B, T, D)), g.normal((B, T, D))
        mods = [S.DotScore(), S.ScaledDotScore(), S.GeneralScore(D, D), S.ConcatScore(D, D), S.AdditiveScore(D, D, D),
                S.CosineScore()]
        times = []
        for m in mods:
            def step(m=m, q=q, k=k):
                s = m(q, k)
                m.backward(xp.ones_like(s))
            times.append(_best(step, args.repeat))
        cells = "".join(f"{t:>11.2f} ({t / times[0]:>5.1f}x)" for t in times)
        print(f"{(B, T, D)!s:<14}{cells}")

    print("\nConcatScore forward: decomposed w_q.q_i + w_k.k_j + b vs literal pairs [q_i; k_j] -> Linear")
    print(f"{'B, T, D':<14}{'decomposed':>12}{'pairs':>12}{'speed-up':>10}{'same scores':>13}")
    for B, T, D in sizes:
        g = Generator(1)
        q, k = g.normal((B, T, D), dtype=xp.float64), g.normal((B, T, D), dtype=xp.float64)
        c = S.ConcatScore(D, D).double()
        w, b = c.weight.data, c.bias.data
        t_dec = _best(lambda c=c, q=q, k=k: c(q, k), args.repeat)
        t_pair = _best(lambda w=w, b=b, q=q, k=k: _naive_concat(w, b, q, k), args.repeat)
        same = bool(xp.allclose(c(q, k), _naive_concat(w, b, q, k), rtol=1e-10))
        print(f"{(B, T, D)!s:<14}{t_dec:>10.2f}ms{t_pair:>10.2f}ms{t_pair / t_dec:>9.0f}x{same!s:>13}")


if __name__ == "__main__":
    main()
