"""Length generalisation of position codes: train a small GPT on sequences of length <= 32,
test it on sequences of length 128.

    python -m npattention demo length                 # the full run (a few minutes on 2 shared cores)
    python -m npattention demo length --fast          # seconds: a tiny, barely trained run

The task (:mod:`npattention.data.periodic`): every sequence repeats a random block of
``period`` tokens, so from position ``period`` on the next token is the one ``period``
places back.  One decoder-only :class:`~npattention.gpt.GPT` per position code --
``sinusoidal`` and ``learned`` (added to the tokens), ``rope``, ``alibi`` and ``relative``
(inside attention), and ``none`` (no position code: only the causal mask) as the baseline
-- is trained on lengths 16..32 with the same seed, data and schedule, then scored by its
next-token accuracy at every position of fresh length-128 sequences (the first ``period``
positions, which are chance, are left out of the averages).

``run(fast)`` returns ``{positional: {"accuracy": (test_len,) host array, "final_loss",
"seconds"}}``; :func:`plot` draws accuracy against position with the training range
shaded.  The notebook 17_beyond_the_notes.ipynb calls both.
"""
import argparse
import json
import os
import time

from ..backend import Generator, manual_seed, np, to_numpy, xp   # np: host-side results and plots only
from ..data.periodic import make_periodic
from ..gpt import GPT
from ..losses import CrossEntropyLoss
from ..optim import Adam, clip_grad_norm_

POSITIONALS = ("sinusoidal", "learned", "rope", "alibi", "relative", "none")

#: "full": the experiment the docs quote; "fast": a smoke run for notebooks and tests
PRESETS = {
    "full": dict(steps=600, batch_size=32, lr=3e-3, test_n=256,
                 model=dict(n_layer=2, n_head=4, d_model=32)),
    "fast": dict(steps=50, batch_size=16, lr=1e-2, test_n=64,
                 model=dict(n_layer=1, n_head=2, d_model=16)),
}


def accuracy_by_position(model, ids):
    """Next-token accuracy at every position ``t`` (predicting ``ids[:, t + 1]``): host ``(T - 1,)``."""
    was_training = model.training
    model.eval()
    try:
        pred = xp.argmax(model(ids[:, :-1]), axis=-1)
    finally:
        model.train(was_training)
    return to_numpy((pred == ids[:, 1:]).mean(axis=0))


def train_one(positional, preset, period=5, vocab_size=8, train_len=32, test_len=128, seed=0):
    """Train one GPT with ``positional`` on lengths ``16..train_len``; return ``(model, losses, seconds)``."""
    manual_seed(seed)                                   # the same initial weights ...
    data_rng = Generator(seed + 1)                      # ... and the same batches for every code
    model = GPT(vocab_size, test_len, positional=positional, **preset["model"])
    opt = Adam(model.parameters(), lr=preset["lr"])
    loss_fn = CrossEntropyLoss()
    losses, start = [], time.perf_counter()
    for _ in range(preset["steps"]):
        length = int(data_rng.integers(16, train_len + 1))   # "up to 32": lengths 16..32
        ids = make_periodic(preset["batch_size"], length + 1, period, vocab_size, rng=data_rng)
        loss = loss_fn(model(ids[:, :-1]), ids[:, 1:])
        model.zero_grad()
        model.backward(loss_fn.backward())
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss))
    return model, losses, time.perf_counter() - start


def run(fast=False, positionals=POSITIONALS, period=5, vocab_size=8, train_len=32, test_len=128, seed=0,
        verbose=False):
    """Train and test one model per position code; see the module docstring."""
    preset = PRESETS["fast" if fast else "full"]
    test = make_periodic(preset["test_n"], test_len + 1, period, vocab_size, rng=Generator(seed + 2))
    results = {}
    for positional in positionals:
        model, losses, seconds = train_one(positional, preset, period, vocab_size, train_len, test_len, seed)
        acc = accuracy_by_position(model, test)
        results[positional] = {"accuracy": acc, "final_loss": float(np.mean(losses[-10:])), "seconds": seconds}
        if verbose:
            print(f"{positional:>10}: loss {results[positional]['final_loss']:.3f}  " + summary_line(acc, period,
                                                                                              train_len), flush=True)
    return results


def ranges(acc, period=5, train_len=32):
    """Mean accuracy on ``(period..train_len-1, train_len..63, 64..end)``: seen lengths, 1-2x, 2-4x."""
    a = np.asarray(acc)
    return a[period - 1:train_len - 1].mean(), a[train_len - 1:63].mean(), a[63:].mean()


def summary_line(acc, period=5, train_len=32):
    inside, near, far = ranges(acc, period, train_len)
    return f"accuracy at positions <{train_len}: {inside:.3f}   {train_len}-63: {near:.3f}   64-127: {far:.3f}"


def plot(results, ax=None, train_len=32, window=4):
    """Accuracy against position (a running mean over ``window`` positions), training range shaded."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    styles = {"none": dict(color="0.5", linestyle=":")}
    for positional, r in results.items():
        acc = np.asarray(r["accuracy"])
        smooth = np.convolve(acc, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(len(smooth)) + window // 2 + 1, smooth, label=positional, **styles.get(positional, {}))
    ax.axvspan(0, train_len, color="0.9", zorder=0)
    ax.text(train_len / 2, 0.02, "trained\nlengths", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("position of the predicted token")
    ax.set_ylabel("next-token accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="position code")
    ax.set_title(f"Length generalisation: trained on lengths <= {train_len}, tested on 128")
    return ax


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m npattention demo length", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a tiny, barely trained run (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="npattention-output/length", help="folder for the figure and results")
    args = parser.parse_args(argv)
    results = run(fast=args.fast, seed=args.seed, verbose=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({k: {"accuracy": [round(float(a), 4) for a in v["accuracy"]], "final_loss": v["final_loss"],
                       "seconds": v["seconds"]} for k, v in results.items()}, f)
    import matplotlib

    matplotlib.use("Agg")
    ax = plot(results)
    ax.figure.savefig(os.path.join(args.out, "length_generalisation.png"), dpi=120, bbox_inches="tight")
    print(f"figure and results in {args.out}/")


if __name__ == "__main__":
    main()
