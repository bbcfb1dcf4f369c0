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

Step timing (``--step-timing``): the CPU time of one decoder step (teacher-forced forward +
backward of every decoder, divided by the number of target steps; and one greedy decoding
step) for this checkout and, with ``--root DIR``, for another checkout of npattention (e.g. an
older commit: ``git worktree add /tmp/old <commit>``), each in its own subprocess; every decoder
is timed in one checkout, then in the other, ``--rounds`` times (so both see the same load),
best of each; the ratio this / other below 1 means this checkout is faster::

    python benchmarks/bench_seq2seq.py --step-timing --root /tmp/old

``--rnn-cpu-time``: the recurrent rows of ``bench_vs_torch.py`` in CPU time, ours and PyTorch's
interleaved in one process (run it with a Python that has torch), and the LSTM's matrix products
alone (its floor; docs/seq2seq.md, "Speed").  One BLAS thread: set ``OPENBLAS_NUM_THREADS=1``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __name__ == "__main__" and "--_step-worker" in sys.argv:  # the worker imports the checkout it times
    sys.path.insert(0, sys.argv[sys.argv.index("--_step-worker") + 1])
else:
    sys.path.insert(0, ROOT)

MODELS = [("bahdanau", {}), ("luong", {"score": "dot"}), ("none", {})]


def run_task(task, n_train, n_test, epochs, edges, max_len_out, hidden, options, models, seed=0):
    from npattention.data import load_task
    from npattention.demos.seq2seq import accuracy_by_length, build_model, evaluate, train

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



# ====================================================================== per-step timing
# The demo's sizes (dates task): batch 64, embedding 16, bidirectional encoder of 32 -> E = 64,
# decoder hidden 64; a source of 24 positions (2 padded in every other row), 12 target steps.
STEP_SIZES = {"B": 64, "S": 24, "T": 12, "V": 40, "Em": 16, "H": 64, "E": 64}


def _step_decoders(s2s):
    """``[(name, decoder)]``, built with the names of the checkout imported (older ones had
    ``Note004Decoder`` and Luong's score ``"concat"``)."""
    z = STEP_SIZES
    args = (z["V"], z["Em"], z["H"], z["E"])
    additive = "additive" if "additive" in getattr(s2s, "LUONG_SCORES", ()) else "concat"
    location = getattr(s2s, "LocationDecoder", None) or s2s.Note004Decoder
    rows = []
    for cell in ("gru", "lstm"):
        rows += [(f"Bahdanau {cell}", lambda c=cell: s2s.BahdanauDecoder(*args, cell=c)),
                 (f"Luong dot {cell}", lambda c=cell: s2s.LuongDecoder(*args, score="dot", cell=c)),
                 (f"Luong general {cell}", lambda c=cell: s2s.LuongDecoder(*args, score="general", cell=c)),
                 (f"Luong additive {cell}", lambda c=cell: s2s.LuongDecoder(*args, score=additive, cell=c)),
                 (f"Location {cell}", lambda c=cell: location(*args, max_len=z["S"], cell=c)),
                 (f"Plain {cell}", lambda c=cell: s2s.PlainDecoder(*args, cell=c))]
    return rows


def step_worker():
    """A worker for one checkout (the one imported): builds every decoder once, then for each line
    ``name repeat`` read from stdin prints ``[train s/step, greedy s/step]`` of that decoder (best of
    ``repeat`` calls) as one JSON line; the first line printed lists the decoders' names."""
    from npattention import seq2seq as s2s
    from npattention.backend import Generator, manual_seed, xp

    z = STEP_SIZES
    B, S, T = z["B"], z["S"], z["T"]
    g = Generator(0)
    enc = g.normal((B, S, z["E"]))
    h0, c0 = g.normal((B, z["H"])), g.normal((B, z["H"]))
    tgt = xp.asarray((xp.arange(B * T).reshape(B, T) * 7) % z["V"])
    src_mask = (xp.arange(S)[None, :] >= xp.asarray([S - 2 * (b % 2) for b in range(B)])[:, None])
    d_logits = g.normal((B, T, z["V"]))
    steps = {}
    for name, build in _step_decoders(s2s):
        manual_seed(0)
        dec, c = build(), (c0 if name.endswith("lstm") else None)

        def train_step(dec=dec, c=c):
            dec.zero_grad()
            dec(tgt, enc, h0, c, src_mask=src_mask)
            dec.backward(d_logits)

        def greedy(dec=dec, c=c):  # eos never produced: all T steps run
            dec.greedy(enc, h0, c, src_mask=src_mask, max_len=T, eos=z["V"] + 1)

        steps[name] = (train_step, greedy)
    print(json.dumps(list(steps)), flush=True)
    for line in sys.stdin:
        name, repeat = line.rsplit(" ", 1)
        times = []
        for fn in steps[name]:
            fn()  # warm-up
            best = float("inf")
            for _ in range(int(repeat)):
                t0 = time.process_time()  # CPU time: less sensitive to other load than wall-clock
                fn()
                best = min(best, time.process_time() - t0)
            times.append(best / T)
        print(json.dumps(times), flush=True)


def step_timing(roots, rounds, repeat):
    """One :func:`step_worker` per checkout in ``roots``; each decoder is timed in every worker in
    turn (so the checkouts share the machine's load), ``rounds`` times; best of each."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_step-worker", root], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for root in roots]
    names = [json.loads(w.stdout.readline()) for w in workers][0]
    best = [{name: [float("inf")] * 2 for name in names} for _ in roots]
    for _ in range(rounds):
        for name in names:
            for w, b in zip(workers, best):
                w.stdin.write(f"{name} {repeat}\n")
                w.stdin.flush()
                b[name] = [min(x, y) for x, y in zip(b[name], json.loads(w.stdout.readline()))]
    for w in workers:
        w.stdin.close()
        w.wait()
    z = STEP_SIZES
    print(f"decoder step, CPU time per target step (best of {rounds} x {repeat}), one BLAS thread; "
          f"B{z['B']} S{z['S']} T{z['T']} Em{z['Em']} H{z['H']} E{z['E']} V{z['V']}")
    for i, root in enumerate(roots):
        print(f"  [{i}] {root}")
    head = f"{'decoder':<22}" + "".join(f" {'[%d] train us' % i:>14}" for i in range(len(roots)))
    head += "".join(f" {'[%d] greedy us' % i:>15}" for i in range(len(roots)))
    if len(roots) == 2:
        head += f" {'train [0]/[1]':>14} {'greedy [0]/[1]':>15}"
    print(head)
    for name in names:
        row = f"{name:<22}" + "".join(f" {b[name][0] * 1e6:14.1f}" for b in best)
        row += "".join(f" {b[name][1] * 1e6:15.1f}" for b in best)
        if len(roots) == 2:
            row += f" {best[0][name][0] / best[1][name][0]:14.3f} {best[0][name][1] / best[1][name][1]:15.3f}"
        print(row)
    return best


# ====================================================================== recurrent layers: CPU time
def rnn_cpu_time(repeat):
    """The RNN/GRU/LSTM rows of ``bench_vs_torch.py`` (forward + backward, float32, one thread), timed in
    CPU time (``time.process_time``: less sensitive to other load than the harness's wall clock),
    ours and PyTorch's interleaved in this process, best of ``repeat``; and the LSTM's matrix products
    alone (the same products as ``rnn.py`` makes, replayed), the floor of the LSTM row."""
    import numpy as np

    sys.path.insert(0, HERE)
    import bench_vs_torch as bvt

    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    print("recurrent layers, forward + backward, CPU time (best of %d), one thread" % repeat)
    for row in bvt.rnn_rows():
        steps = {"ours": row.ours()}
        if torch is not None:
            steps["torch"] = row.torch_()
        best = dict.fromkeys(steps, float("inf"))
        for _ in range(repeat):
            for name, step in steps.items():
                t0 = time.process_time()
                step()
                best[name] = min(best[name], time.process_time() - t0)
        ratio = f"  ratio {best['ours'] / best['torch']:.2f}" if torch is not None else ""
        print(f"  {row.name:<24} " + "  ".join(f"{k} {v * 1e3:6.2f} ms" for k, v in best.items()) + ratio)
    B, T, I, H, G = 64, 32, 64, 128, 4  # the LSTM row
    r = np.random.default_rng(0)
    x, w_ih, w_hh = (r.standard_normal(s).astype(np.float32) for s in ((B * T, I), (G * H, I), (G * H, H)))
    w_hh_t, h, d = np.ascontiguousarray(w_hh.T), x[:B, :1].repeat(H, 1), r.standard_normal((B, G * H)).astype(np.float32)
    d_all, h_all = r.standard_normal((B * T, G * H)).astype(np.float32), x[:, :1].repeat(H, 1)

    def products():
        _ = x @ w_ih.T  # the input projection of all steps
        for _ in range(T):
            _ = h @ w_hh_t  # forward, per step
        for _ in range(T):
            _ = d @ w_hh  # backward, per step
        _ = d_all.T @ h_all, d_all.T @ x, d_all @ w_ih  # dW_hh, dW_ih, dx once

    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        products()
        best = min(best, time.process_time() - t0)
    flops = 3 * 2 * B * T * G * H * (I + H)
    print(f"  LSTM matrix products alone: {best * 1e3:.2f} ms ({flops / best / 1e9:.1f} GFLOP/s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small data, one epoch (a smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (1 with --fast)")
    parser.add_argument("--max-len", type=int, default=24, help="longest string of the reverse task")
    parser.add_argument("--note004", action="store_true", help="also train the location-based decoder (the notes' Attn)")
    parser.add_argument("--out", default=os.path.join("npattention-output", "bench_seq2seq"))
    parser.add_argument("--step-timing", action="store_true",
                        help="time one decoder step (no training); with --root, against another checkout")
    parser.add_argument("--root", default=None, help="--step-timing: another npattention checkout to compare with")
    parser.add_argument("--rounds", type=int, default=10, help="--step-timing: interleaved rounds")
    parser.add_argument("--repeat", type=int, default=5, help="--step-timing: timed calls per decoder and round")
    parser.add_argument("--_step-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rnn-cpu-time", action="store_true",
                        help="RNN/GRU/LSTM against PyTorch (if installed) in CPU time, and the LSTM's products alone")
    args = parser.parse_args(argv)
    if args.rnn_cpu_time:
        rnn_cpu_time(max(args.repeat, 7))
        return 0
    if args._step_worker:
        step_worker()
        return 0
    if args.step_timing:
        step_timing([ROOT] + ([os.path.abspath(args.root)] if args.root else []), args.rounds, args.repeat)
        return 0
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
