"""Train a small character-level GPT on sentences of a toy grammar, then let it write.

    python -m npattention demo gpt            # about a minute on 2 CPU cores
    python -m npattention demo gpt --fast     # a few seconds: a smaller run

The text comes from the probabilistic grammar of :mod:`npattention.data.grammar` (one
sentence per line, e.g. ``"the small dogs chase a bird near the red tree ."``), made in
code.  The demo reports, on held-out text and on sampled text:

* **bits per character** of the GPT on held-out lines against a **bigram baseline** (the
  next character given only the previous one, counted on the training text, add-one
  smoothed), on exactly the same predictions;
* the **structure score**: the fraction of sampled lines (prompt ``"\\n"``, temperature 1,
  KV cache) that the grammar accepts -- spelling, word order and number agreement
  (``"the dogs sees"`` is rejected) all have to be right -- again against lines sampled
  from the bigram model, and how many accepted lines are new (not in the training text);
* a few samples at several temperatures, and the attention maps of a generated line.

Written to ``--out`` (default ``npattention-output/gpt``): ``checkpoint.npz`` (weights, config
and vocabulary), ``attention.png`` (every head of every block for one generated line),
``training_curve.png``.  The functions here
(:func:`run`, :func:`bigram_model`, :func:`structure_score`) are reused by the tests and the
decoding notebook.
"""
import argparse
import math
import os
import time

from ..backend import Generator, add_at, manual_seed, to_numpy, xp
from ..data.grammar import accepts, char_vocab, make_grammar_text
from ..decoding import generate
from ..gpt import GPT
from ..losses import CrossEntropyLoss
from ..optim import AdamW, WarmupCosine, clip_grad_norm_
from ..softmax import log_softmax
from . import positive_int

#: model and schedule; "full" is about a minute on 2 shared cores, "fast" a few seconds
PRESETS = {
    "full": dict(n_lines=8000, steps=700, batch_size=32, block_size=64, lr=3e-3,
                 model=dict(n_layer=2, n_head=4, d_model=64)),
    "fast": dict(n_lines=6000, steps=600, batch_size=24, block_size=48, lr=4e-3,
                 model=dict(n_layer=2, n_head=2, d_model=48)),
}

def encode_lines(lines, vocab):
    """One stream of ids: every line followed by ``"\\n"``."""
    return xp.asarray(vocab.encode("".join(line + "\n" for line in lines)), dtype=xp.int64)


def windows(stream, block_size):
    """Non-overlapping ``(N, block_size + 1)`` windows of a stream (inputs ``[:, :-1]``,
    targets ``[:, 1:]``)."""
    n = (stream.shape[0] - 1) // block_size
    idx = xp.arange(n)[:, None] * block_size + xp.arange(block_size + 1)[None, :]
    return stream[idx]


def bigram_model(stream, vocab_size):
    """``log p(next | previous)`` ``(V, V)`` counted on ``stream``, add-one smoothed over the
    characters that occur in it (so tokens never seen get no mass)."""
    counts = xp.zeros((vocab_size, vocab_size))
    seen = xp.zeros(vocab_size, dtype=bool)
    seen[stream] = True
    add_at(counts, (stream[:-1], stream[1:]), 1.0)
    counts = counts + seen[None, :]                 # add-one over the seen characters
    probs = counts / counts.sum(axis=1, keepdims=True)
    return xp.log(xp.where(probs > 0, probs, 1.0)) + xp.where(probs > 0, 0.0, -xp.inf)   # log 0 = -inf, no warning


def bits_per_char(model, data, batch_size=128):
    """Held-out bits per character of a GPT on windows ``data (N, T+1)``."""
    total, count = 0.0, 0
    was = model.training
    model.eval()
    for i in range(0, data.shape[0], batch_size):
        chunk = data[i:i + batch_size]
        logp = log_softmax(model(chunk[:, :-1]))
        total -= float(xp.take_along_axis(logp, chunk[:, 1:, None], axis=-1).sum())
        count += chunk[:, 1:].size
    model.train(was)
    return total / count / math.log(2)


def bigram_bits_per_char(logp, data):
    """Bits per character of the bigram table on the same targets as :func:`bits_per_char`."""
    return -float(logp[data[:, :-1], data[:, 1:]].mean()) / math.log(2)


def sample_lines(model, vocab, n, temperature=1.0, top_k=None, top_p=None, seed=0, max_chars=None):
    """``n`` lines sampled from the GPT, each from the prompt ``"\\n"``, with the KV cache."""
    nl = vocab.stoi["\n"]
    max_new = min(model.block_size - 1, max_chars or model.block_size)
    ids = generate(model, xp.full((n, 1), nl, dtype=xp.int64), max_new, temperature=temperature, top_k=top_k,
                   top_p=top_p, seed=seed, eos_idx=nl)
    lines = []
    for row in to_numpy(ids[:, 1:]).tolist():
        text = "".join(vocab.itos[t] for t in row if t != vocab.PAD)
        lines.append(text.split("\n")[0] if "\n" in text else None)   # None: no end of line in time
    return lines


def sample_bigram_lines(logp, vocab, n, seed=0, max_chars=80):
    """``n`` lines sampled from the bigram table (the baseline's structure score)."""
    rng = Generator(seed).host
    probs = to_numpy(xp.exp(logp))
    nl = vocab.stoi["\n"]
    lines = []
    for _ in range(n):
        prev, chars = nl, []
        for _ in range(max_chars):
            prev = int(rng.choice(len(probs), p=probs[prev] / probs[prev].sum()))
            if prev == nl:
                break
            chars.append(vocab.itos[prev])
        lines.append("".join(chars) if prev == nl else None)
    return lines


def structure_score(lines):
    """Fraction of ``lines`` the grammar accepts (unfinished lines, ``None``, count as wrong)."""
    return sum(1 for line in lines if line is not None and accepts(line)) / max(len(lines), 1)


def train(model, stream, steps, batch_size, lr, seed=0, progress=True):
    """AdamW + warm-up/cosine on random windows of the stream; returns the loss per step."""
    from tqdm.auto import tqdm

    rng = Generator(seed).host
    T = model.block_size
    opt = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = WarmupCosine(opt, warmup_steps=max(steps // 20, 1), total_steps=steps, min_lr=lr * 0.05)
    loss_fn = CrossEntropyLoss()
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="gpt", disable=not progress):
        starts = xp.asarray(rng.integers(0, stream.shape[0] - T - 1, batch_size))
        batch = stream[starts[:, None] + xp.arange(T + 1)[None, :]]        # (B, T+1)
        opt.zero_grad()
        loss = loss_fn(model(batch[:, :-1]), batch[:, 1:])                 # next-token prediction
        model.backward(loss_fn.backward())
        clip_grad_norm_(opt.params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
    return losses


def run(fast=False, seed=0, steps=None, progress=True, n_samples=200):
    """Data, training and every measurement of the demo; returns a dict."""
    preset = PRESETS["fast" if fast else "full"]
    vocab = char_vocab()
    lines = make_grammar_text(preset["n_lines"] + 500, seed=seed)
    train_lines, test_lines = lines[:preset["n_lines"]], lines[preset["n_lines"]:]
    train_stream, test_stream = encode_lines(train_lines, vocab), encode_lines(test_lines, vocab)
    manual_seed(seed)
    model = GPT(len(vocab), preset["block_size"], pad_idx=vocab.PAD, **preset["model"])
    start = time.perf_counter()
    losses = train(model, train_stream, steps or preset["steps"], preset["batch_size"], preset["lr"], seed=seed,
                   progress=progress)
    seconds = time.perf_counter() - start
    test = windows(test_stream, preset["block_size"])
    bigram = bigram_model(train_stream, len(vocab))
    samples = sample_lines(model, vocab, n_samples, seed=seed + 1)
    bigram_samples = sample_bigram_lines(bigram, vocab, n_samples, seed=seed + 1)
    accepted = [s for s in samples if s is not None and accepts(s)]
    return dict(model=model, vocab=vocab, losses=losses, seconds=seconds, train_lines=train_lines,
                bpc=bits_per_char(model, test), bigram_bpc=bigram_bits_per_char(bigram, test),
                samples=samples, bigram_samples=bigram_samples, structure=structure_score(samples),
                bigram_structure=structure_score(bigram_samples),
                novel=sum(1 for s in accepted if s not in set(train_lines)) / max(len(accepted), 1))


def attention_figure(model, vocab, line):
    """Every head of every block of the GPT reading ``"\\n" + line``: a Figure."""
    from ..viz import show_heatmaps

    ids = xp.asarray([vocab.encode("\n" + line)], dtype=xp.int64)
    was = model.training
    model.eval()
    model(ids)
    model.train(was)
    maps = to_numpy(xp.stack([w[0] for w in model.attention_maps()]))   # (layers, H, T, T)
    labels = ["\\n"] + [c if c != " " else "_" for c in line]
    L, H = maps.shape[:2]
    titles = [[f"block {i + 1}, head {h + 1}" for h in range(H)] for i in range(L)]
    fig = show_heatmaps(maps, xlabel="key (character read)", ylabel="query (position predicting the next)",
                        titles=titles, x_labels=labels, y_labels=labels,
                        figsize=(min(4.2 * H + 1.5, 18), max(4.0, 0.17 * len(labels) + 1.2) * L))
    fig.suptitle(f"Causal self-attention of the GPT on a line it generated: {line!r}  ('_' = space)")
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m npattention demo gpt",
                                     description="Train a character-level GPT on a toy grammar (CPU).")
    parser.add_argument("--fast", action="store_true", help="smaller model and fewer steps: a few seconds")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default: per preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("npattention-output", "gpt"), help="folder for the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps <= 0:
        parser.error(f"--steps must be a positive int, got {args.steps}")
    r = run(fast=args.fast, seed=args.seed, steps=args.steps, progress=not args.no_progress)
    model, vocab = r["model"], r["vocab"]
    print(f"\nGPT: {model.num_parameters():,} parameters ({model.extra_repr()}), "
          f"{len(r['losses'])} steps in {r['seconds']:.1f} s, final loss {r['losses'][-1]:.3f} nats/char")
    print(f"held-out bits per character: GPT {r['bpc']:.3f}  vs  bigram baseline {r['bigram_bpc']:.3f}")
    n = len(r["samples"])
    print(f"structure score (sampled lines the grammar accepts, temperature 1, {n} lines): "
          f"GPT {r['structure']:.1%}  vs  bigram {r['bigram_structure']:.1%}; "
          f"{r['novel']:.0%} of the GPT's accepted lines are not in the training text")
    print("\nsamples (temperature 1):")
    for s in r["samples"][:6]:
        print(f"  {'ok ' if s is not None and accepts(s) else 'BAD'} {s!r}")
    print("bigram samples:")
    for s in r["bigram_samples"][:3]:
        print(f"  {'ok ' if s is not None and accepts(s) else 'BAD'} {s!r}")
    for temperature, top_k, top_p in ((0.5, None, None), (1.5, None, None), (1.0, 5, None), (1.0, None, 0.9)):
        lines = sample_lines(model, vocab, 100, temperature=temperature, top_k=top_k, top_p=top_p, seed=5)
        opts = f"T={temperature}" + (f", top_k={top_k}" if top_k else "") + (f", top_p={top_p}" if top_p else "")
        print(f"{opts:<16} structure {structure_score(lines):6.1%}   e.g. {lines[0]!r}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    line = next((s for s in r["samples"] if s is not None and accepts(s) and 18 <= len(s) <= 30), None) \
        or next(s for s in r["samples"] if s is not None)
    fig = attention_figure(model, vocab, line)
    path_attn = os.path.join(args.out, "attention.png")
    fig.savefig(path_attn, dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([x / math.log(2) for x in r["losses"]], label="GPT, training batches")
    ax.axhline(r["bigram_bpc"], color="k", ls="--", label=f"bigram, held-out ({r['bigram_bpc']:.2f})")
    ax.axhline(r["bpc"], color="C1", ls=":", label=f"GPT, held-out ({r['bpc']:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.set_title("Character-level GPT on the toy grammar")
    ax.legend()
    path_curve = os.path.join(args.out, "training_curve.png")
    fig.savefig(path_curve, dpi=100, bbox_inches="tight")
    plt.close(fig)
    from ..checkpoint import save_checkpoint

    save_checkpoint(os.path.join(args.out, "checkpoint.npz"), model, config=model.config, vocab=vocab.state(),
                    bits_per_char=r["bpc"], structure_score=r["structure"])
    print(f"\nsaved checkpoint.npz, attention.png (the line {line!r}) and training_curve.png in "
          f"{os.path.abspath(args.out)}")
    return 0
