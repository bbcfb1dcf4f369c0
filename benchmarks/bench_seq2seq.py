"""Seq2seq benchmark: attention against the fixed-length-context baseline, same budget.

    python benchmarks/bench_seq2seq.py [--fast] [--epochs 3] [--out DIR]

Part 1 (dates): Bahdanau, Luong (dot) and no attention (and, with ``--note004``, the
location-based decoder, the notes' ``Attn``), each trained for the same
number of epochs on the same dates with the same sizes; held-out exact match, training
time and the ratio to the baseline; accuracy by source length.

Part 2 (reverse, longer inputs): the same three models on the ``reverse`` task with
strings of 4..``--max-len`` characters; accuracy by input length.  A fixed-length
context has to hold the whole string, so the baseline degrades as inputs grow, while
attention looks up each character when it needs it.

Writes ``accuracy_vs_length.png`` (both parts) to ``--out``.  Timings are wall-clock on
whatever CPU runs this (NumPy, one thread unless your BLAS uses more).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from npattention.data import load_task  # noqa: E402
from npattention.demos.seq2seq import accuracy_by_length, build_model, evaluate, train  # noqa: E402

MODELS = [("bahdanau", {}), ("luong", {"score": "dot"}), ("none", {})]


def run_task(task, n_train, n_test, epochs, edges, max_len_out, hidden, options, models, seed=0):
    vocab, data = load_task(task, n_train=n_train, n_val=n_test, n_test=n_test, seed=seed, **options)
    max_src = max(int(d.src_lengths.max()) for d in data.values())
    rows, by_length = [], {}
    for attention, kw in models:
        if attention == "note004":
            kw = dict(kw, max_src_len=max_src)
        model = build_model(vocab, attention, hidden_size=hidden, embed_dim=16, seed=seed, **kw)
        history, _ = train(model, data["train"], None, vocab, epochs=epochs, batch_size=64, lr=0.01,
                           seed=seed, progress=False, log=None)
        acc, pred = evaluate(model, data["test"], vocab, max_len=max_len_out)
        rows.append((attention, acc, history["seconds"], history["loss"][-1]))
        by_length[attention] = accuracy_by_length(data["test"].sources, pred, data["test"].targets, edges)
        print(f"  {task:<8} {attention:<9} exact match {acc:6.3f}   train {history['seconds']:6.1f} s   "
              f"final loss {history['loss'][-1]:.4f}", flush=True)
    return rows, by_length


def print_tables(title, rows, by_length):
    base = {a: acc for a, acc, _, _ in rows}["none"]
    print(f"\n{title}")
    print(f"{'model':<10} {'exact match':>11} {'train s':>8} {'acc / none':>10}")
    for attention, acc, secs, _ in rows:
        ratio = f"{acc / base:10.2f}" if base > 0 else "       inf"
        print(f"{attention:<10} {acc:>11.3f} {secs:>8.1f} {ratio}")
    bins = by_length[rows[0][0]]
    print("accuracy by source length: " + "  ".join(f"[{lo},{hi})" for lo, hi, _, _ in bins))
    for attention, _, _, _ in rows:
        print(f"  {attention:<9} " + "  ".join(f"{acc:7.3f}" for _, _, _, acc in by_length[attention])
              + "   (n = " + ",".join(str(n) for _, _, n, _ in by_length[attention]) + ")")


def plot(parts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 3.8), squeeze=False)
    for ax, (title, by_length) in zip(axes[0], parts):
        for attention, bins in by_length.items():
            centers = [(lo + hi - 1) / 2 for lo, hi, _, _ in bins]
            ax.plot(centers, [acc for _, _, _, acc in bins], marker="o", label=attention)
        ax.set_xlabel("source length (characters)")
        ax.set_ylabel("exact match")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small data, one epoch (a smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (1 with --fast)")
    parser.add_argument("--max-len", type=int, default=24, help="longest string of the reverse task")
    parser.add_argument("--note004", action="store_true", help="also train the location-based decoder (the notes' Attn)")
    parser.add_argument("--out", default=os.path.join("npattention-output", "bench_seq2seq"))
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.fast else 3)
    models = MODELS[:2] + [("note004", {})] + MODELS[2:] if args.note004 else MODELS
    n_train, n_test = (2000, 200) if args.fast else (10000, 1000)
    start = time.perf_counter()
    print(f"dates: {n_train} training dates, {epochs} epochs per model, hidden 32 (bidirectional encoder)")
    dates = run_task("dates", n_train, n_test, epochs, [6, 10, 14, 18, 22, 30], 11, 32, {}, models)
    print(f"reverse: strings of 4..{args.max_len} characters, {n_train} training strings, {epochs} epochs")
    step = max(args.max_len // 5, 1)
    edges = list(range(4, args.max_len + 1, step))
    edges = edges[:-1] + [args.max_len + 1] if len(edges) > 1 else [4, args.max_len + 1]
    rev = run_task("reverse", n_train, n_test, epochs, edges, args.max_len + 1, 32,
                   {"min_len": 4, "max_len": args.max_len}, models)
    print_tables("dates (same budget)", *dates)
    print_tables(f"reverse, 4..{args.max_len} characters (same budget)", *rev)
    os.makedirs(args.out, exist_ok=True)
    path = plot([("dates", dates[1]), (f"reverse (4..{args.max_len} chars)", rev[1])],
                os.path.join(args.out, "accuracy_vs_length.png"))
    print(f"\nplot: {path}\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
