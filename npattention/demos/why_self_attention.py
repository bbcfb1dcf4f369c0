"""``python -m npattention demo why``: why self-attention -- accuracy against distance, and cost.

    python -m npattention demo why --fast          # T=10, 4 distances, 80 steps (about 10 s)
    python -m npattention demo why                 # T=24, 7 distances, 600 steps (a few minutes)

Part 1 (class notes 001/002): the look-back task (:func:`npattention.data.long_range.make_lookback`)
asks, at the last position, for the token ``d`` steps back.  Four encoders with about the same
number of parameters and the same optimiser steps are trained for each ``d``: self-attention,
an LSTM, a 1-D CNN stack (receptive field 5) and the notes' window-based fully connected layer
(2 neighbours each side).  It prints and plots held-out accuracy against ``d``.

Part 2: the table of per-layer cost, sequential operations and maximum path length (the
"Attention is all you need" comparison), with the forward + backward time of one layer of each
kind measured at two sequence lengths in the same run.
"""
import argparse
import os
import time

from ..backend import Generator, manual_seed, to_numpy, xp
from ..data.long_range import make_lookback
from ..losses import CrossEntropyLoss
from ..optim import Adam
from ..sequence_models import ENCODERS, SequenceClassifier
from . import positive_float, positive_int

#: display names for the encoders
NAMES = {"self_attention": "self-attention", "lstm": "LSTM", "cnn": "CNN stack (k=3, 2 layers)",
         "window_fc": "window FC (2 each side)"}


def build(encoder, vocab, T, budget=2400, d_model=16):
    """The ``encoder`` model for the look-back task, its width chosen so that the parameter
    count is as close as possible to ``budget`` (self-attention: ``dim_feedforward``)."""
    def make(width):
        if encoder == "self_attention":
            return SequenceClassifier(vocab, vocab, encoder, "last", d_model=d_model, max_len=T,
                                      dim_feedforward=width)
        options = {"cnn": {"kernel": 3, "layers": 2}, "window_fc": {"context": 2}}.get(encoder, {})
        return SequenceClassifier(vocab, vocab, encoder, "last", d_model=d_model, hidden=width, **options)

    counts = {w: make(w).num_parameters() for w in range(4, 65, 2)}
    best = min(counts, key=lambda w: abs(counts[w] - budget))
    return make(best)


def train_lookback(encoder, d, T=10, vocab=4, steps=80, batch_size=32, lr=2e-2, seed=0, n_test=500, budget=2400):
    """Train one model on the look-back task at distance ``d``; return ``(accuracy, model)``."""
    manual_seed(seed)
    model = build(encoder, vocab, T, budget)
    X, y = make_lookback(steps * batch_size, T, d, vocab, seed=seed + 17 * d + 1)
    Xt, yt = make_lookback(n_test, T, d, vocab, seed=seed + 17 * d + 100_000)
    opt, loss = Adam(model.parameters(), lr=lr), CrossEntropyLoss()
    for s in range(steps):
        rows = slice(s * batch_size, (s + 1) * batch_size)
        opt.zero_grad()
        loss(model(X[rows]), y[rows])
        model.backward(loss.backward())
        opt.step()
    model.eval()
    acc = float((to_numpy(model(Xt)).argmax(axis=1) == to_numpy(yt)).mean())
    return acc, model


def distance_sweep(distances, T=10, steps=80, encoders=ENCODERS, progress=print, **options):
    """``{encoder: [accuracy for d in distances]}`` and ``{encoder: parameter count}``."""
    acc, params = {}, {}
    for enc in encoders:
        acc[enc] = []
        for d in distances:
            a, model = train_lookback(enc, d, T=T, steps=steps, **options)
            acc[enc].append(a)
            params[enc] = model.num_parameters()
        if progress:
            progress(f"{NAMES[enc]:<28} {params[enc]:>6} params   " +
                     "  ".join(f"d={d}: {a:.2f}" for d, a in zip(distances, acc[enc])))
    return acc, params


def plot_sweep(distances, acc, params, vocab, steps, path=None, ax=None):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
    for enc, marker in zip(acc, "os^D"):
        ax.plot(distances, acc[enc], marker=marker, label=f"{NAMES[enc]} ({params[enc]} params)")
    ax.axhline(1 / vocab, color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("distance d (answer = token d steps before the last)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"look-back task, same budget and {steps} Adam steps each", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    if path:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=110)
    return ax


# ---------------------------------------------------------------- the cost table
#: (layer, complexity per layer, sequential operations, maximum path length)
THEORY = [
    ("self-attention", "O(T^2 d)", "O(1)", "O(1)"),
    ("recurrent (LSTM)", "O(T d^2)", "O(T)", "O(T)"),
    ("convolution (kernel k)", "O(k T d^2)", "O(1)", "O(T / k)"),
    ("window FC (c each side)", "O((2c+1) T d^2)", "O(1)", "none beyond c"),
]


def _layer_for(kind, d):
    from ..attention.self_attention import SelfAttention
    from ..rnn import LSTM
    from ..sequence_models import ConvStack, WindowFC

    return {"self-attention": lambda: SelfAttention(d, 1),
            "recurrent (LSTM)": lambda: LSTM(d, d),
            "convolution (kernel k)": lambda: ConvStack(d, d, kernel=3, layers=1),
            "window FC (c each side)": lambda: WindowFC(d, d, context=1)}[kind]()


def time_layers(T_values=(64, 256), d=32, batch_size=4, repeat=3, seed=0):
    """``{kind: [seconds for T in T_values]}``: best of ``repeat`` forward + backward of one layer."""
    rng = Generator(seed)
    out = {}
    for kind, *_ in THEORY:
        layer = _layer_for(kind, d)
        out[kind] = []
        for T in T_values:
            x = rng.normal((batch_size, T, d))
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                y = layer(x)
                y = y[0] if isinstance(y, tuple) else y
                layer.backward(xp.ones_like(y))
                best = min(best, time.perf_counter() - start)
            out[kind].append(best)
    return out


def format_table(times, T_values):
    head = (f"{'layer':<26} {'cost per layer':<16} {'sequential':<11} {'max path':<14} " +
            " ".join(f"{'T=' + str(T) + ' ms':>10}" for T in T_values) + f" {'ratio':>7}")
    lines = [head, "-" * len(head)]
    for kind, cost, seq, path in THEORY:
        t = times[kind]
        lines.append(f"{kind:<26} {cost:<16} {seq:<11} {path:<14} " + " ".join(f"{1e3 * s:>10.2f}" for s in t) +
                     f" {t[-1] / t[0]:>7.1f}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m npattention demo why", description=__doc__.split("\n")[0])
    p.add_argument("--fast", action="store_true", help="T=10, distances 1,3,6,9, 80 steps (seconds)")
    p.add_argument("--T", type=positive_int, default=None, help="sequence length (default 24, --fast 10)")
    p.add_argument("--steps", type=positive_int, default=None, help="Adam steps per model (default 600, --fast 80)")
    p.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default 1e-2, --fast 2e-2)")
    p.add_argument("--distances", default=None, help="comma-separated distances (default spread over 1..T-1)")
    p.add_argument("--vocab", type=positive_int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("npattention-output", "why"), help="output folder")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    args.T = args.T or (10 if args.fast else 24)
    args.steps = args.steps or (80 if args.fast else 600)
    args.lr = args.lr or (2e-2 if args.fast else 1e-2)
    if args.distances:
        args.distances = [int(v) for v in args.distances.split(",")]
    else:
        args.distances = [1, 3, 6, 9] if args.fast else [1, 2, 4, 8, 12, 16, 23]
    args.distances = [d for d in args.distances if 0 <= d < args.T]
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(f"look-back task: T={args.T}, vocab={args.vocab} (chance {1 / args.vocab:.2f}), {args.steps} Adam steps "
          f"(lr {args.lr}) of 32 sequences per model, distances {args.distances}")
    start = time.perf_counter()
    acc, params = distance_sweep(args.distances, T=args.T, steps=args.steps, vocab=args.vocab, seed=args.seed,
                                 lr=args.lr)
    print(f"({time.perf_counter() - start:.1f} s)")
    T_values = (32, 128) if args.fast else (64, 512)
    times = time_layers(T_values)
    print("\none layer, d=32, batch 4, forward + backward, best of 3 (shared machine: compare rows of one run)")
    print(format_table(times, T_values))
    if not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        path = os.path.join(args.out, "accuracy_vs_distance.png")
        plot_sweep(args.distances, acc, params, args.vocab, args.steps, path=path)
        print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
