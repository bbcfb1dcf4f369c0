"""Anomaly mode's overhead: one training step (forward + loss + backward) with
``detect_anomaly()`` on, against the same step with it off, timed in the same run.

    python benchmarks/bench_anomaly.py [--repeat 7] [--quick]

Models: a small Transformer on token ids (many small modules: the worst case, where the
per-module checks are a large share of the work) and an MLP with wide layers (few, big
modules).  Runs are interleaved (off, on, off, on, ...) and the best of ``--repeat`` is
kept for each.  Timings on a shared machine are noisy: read the ratio on/off.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def models(quick):
    from npattention import CrossEntropyLoss, Linear, ReLU, Sequential, Transformer, manual_seed
    from npattention.backend import Generator, xp

    manual_seed(0)
    rng = Generator(0)
    B, S, V = (8, 12, 20) if quick else (32, 24, 40)
    tr = Transformer(V, V, d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64,
                     dropout=0.1)
    src = xp.asarray(rng.host.integers(3, V, size=(B, S)))
    tgt = xp.asarray(rng.host.integers(3, V, size=(B, S)))
    ce = CrossEntropyLoss()

    def step_transformer():
        tr.zero_grad()
        loss = ce(tr(src, tgt), tgt)
        tr.backward(ce.backward())
        return float(loss)

    width, n = (256, 256) if quick else (1024, 1024)
    mlp = Sequential(Linear(width, width), ReLU(), Linear(width, width), ReLU(), Linear(width, 10))
    x = rng.normal((n, width), dtype=xp.float32)
    y = xp.asarray(rng.host.integers(0, 10, size=n))

    def step_mlp():
        mlp.zero_grad()
        loss = ce(mlp(x), y)
        mlp.backward(ce.backward())
        return float(loss)

    return {"Transformer (2+2 layers, d=32)": (step_transformer, len(tr.modules())),
            f"MLP ({width} wide, batch {n})": (step_mlp, len(mlp.modules()))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    args = p.parse_args(argv)
    from npattention.module import detect_anomaly

    print(f"{'model':<34} {'modules':>7} {'off (ms)':>9} {'on (ms)':>9} {'on/off':>7}")
    for name, (step, n_modules) in models(args.quick).items():
        step()
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeat):
            for on in (False, True):
                with detect_anomaly(on):
                    t0 = time.perf_counter()
                    step()
                    best[on] = min(best[on], time.perf_counter() - t0)
        print(f"{name:<34} {n_modules:>7} {best[False] * 1e3:>9.2f} {best[True] * 1e3:>9.2f} "
              f"{best[True] / best[False]:>7.2f}")


if __name__ == "__main__":
    main()
