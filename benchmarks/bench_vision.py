"""Held-out accuracy of the glyph CNN with and without each attention block, same budget.

    python benchmarks/bench_vision.py              # 3 seeds, default budget
    python benchmarks/bench_vision.py --fast       # 1 seed, tiny budget (a smoke run)

Every block trains the same AttentionCNN (same data, same seeds, same number of Adam steps)
and is scored on the same held-out images; the table gives the mean (and spread over seeds)
of the accuracy, the parameter count, the training time and each ratio to ``none``.
Timings are wall-clock on this machine's CPU and move with its load.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npattention.backend import manual_seed, np
from npattention.losses import CrossEntropyLoss
from npattention.optim import Adam
from npattention.train import accuracy, fit
from npattention.data.glyphs import GLYPHS, make_glyphs
from npattention.vision.models import BLOCKS, AttentionCNN


def run(block, seed, args, train_data, test_data):
    manual_seed(seed)
    model = AttentionCNN(args.channels, len(GLYPHS), block=block, width=args.width)
    start = time.perf_counter()
    fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=args.lr), train_data, epochs=args.epochs,
        batch_size=32, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    return accuracy(model, test_data), seconds, model.num_parameters()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blocks", default=",".join(BLOCKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--clutter", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fast", action="store_true")
    args = p.parse_args(argv)
    if args.fast:
        args.seeds, args.epochs, args.n_train, args.n_test = 1, 1, 300, 200
    blocks = args.blocks.split(",")
    print(f"glyph task {args.size}x{args.size}, clutter={args.clutter}, noise={args.noise}; {args.n_train} train / "
          f"{args.n_test} test images; {args.epochs} epoch(s) of batch 32 = "
          f"{args.epochs * -(-args.n_train // 32)} Adam steps; {args.seeds} seed(s)")
    results = {}
    for block in blocks:
        accs, times = [], []
        for seed in range(args.seeds):
            data = {"size": args.size, "channels": args.channels, "clutter": args.clutter, "noise": args.noise}
            train_data = make_glyphs(args.n_train, seed=seed, **data)
            test_data = make_glyphs(args.n_test, seed=1000 + seed, **data)
            acc, sec, n_params = run(block, seed, args, train_data, test_data)
            accs.append(acc)
            times.append(sec)
        results[block] = (np.mean(accs), np.std(accs), np.mean(times), n_params)
    base = results.get("none")
    head = f"{'block':<7} {'accuracy':>9} {'+-':>6} {'params':>7} {'train s':>8} {'acc/none':>9} {'time/none':>10}"
    print(head)
    print("-" * len(head))
    for block, (acc, sd, sec, n_params) in results.items():
        ra = f"{acc / base[0]:.3f}" if base else "-"
        rt = f"{sec / base[2]:.2f}" if base else "-"
        print(f"{block:<7} {acc:>9.3f} {sd:>6.3f} {n_params:>7} {sec:>8.1f} {ra:>9} {rt:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
