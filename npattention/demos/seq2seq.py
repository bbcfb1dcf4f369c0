"""Demo: an RNN encoder-decoder with attention learns to translate dates to ISO format.

    python -m npattention demo seq2seq [--attention bahdanau|luong|location|none] [--task dates|reverse]
                                       [--score dot|general|concat] [--cell gru|lstm]
                                       [--fast] [--epochs N] [--seed S] [--out DIR]

Trains on CPU (NumPy) with a progress bar, prints the held-out exact-match accuracy
(greedy, and beam search of width ``--beam``, 4 by default) and a few translations, and writes to ``--out`` (default ``npattention-output/seq2seq``):

* ``seq2seq_<attention>.npz`` -- a checkpoint (:mod:`npattention.checkpoint`) with the
  model configuration and the vocabulary in its metadata;
* ``alignment_<attention>.png`` -- the classic alignment figure: input characters (x)
  against output characters (y) for a few test dates.

The helpers below (:func:`build_model`, :func:`train`, :func:`evaluate`,
:func:`accuracy_by_length`, :func:`plot_alignments`) are reused by
``benchmarks/bench_seq2seq.py`` and ``notebooks/07_seq2seq_attention.ipynb``.
"""
import argparse
import os
import time

from tqdm.auto import tqdm

from ..backend import manual_seed, to_numpy
from ..checkpoint import save_checkpoint
from ..data import Vocab, exact_match, load_task
from ..losses import CrossEntropyLoss
from ..optim import Adam
from ..seq2seq import ATTENTIONS, Seq2Seq
from ..train import fit
from . import positive_float, positive_int

TARGET_LEN = 10  # "YYYY-MM-DD"


def build_model(vocab, attention="bahdanau", hidden_size=32, embed_dim=16, cell="gru", score="dot",
                bidirectional=True, max_src_len=None, seed=0):
    """A :class:`~npattention.seq2seq.Seq2Seq` for a character task (weights seeded with ``seed``)."""
    manual_seed(seed)
    return Seq2Seq(len(vocab), len(vocab), embed_dim=embed_dim, hidden_size=hidden_size, attention=attention,
                   score=score, cell=cell, bidirectional=bidirectional, max_src_len=max_src_len)


def make_step(model, loss_fn):
    """``step_fn(batch)`` for :func:`npattention.train.fit`: teacher-forced forward, loss, backward."""

    def step(batch):
        logits, _ = model(batch.src, batch.tgt_in, batch.src_lengths)
        loss = loss_fn(logits, batch.tgt_out)  # ignore_index = <pad>
        model.backward(loss_fn.backward())
        return loss

    return step


def evaluate(model, dataset, vocab, batch_size=500, max_len=TARGET_LEN + 1, beam_width=1, alpha=0.0):
    """Decode every row of ``dataset`` (greedy, or beam search with ``beam_width > 1``, see
    :func:`npattention.decoding.beam_search_seq2seq`); return ``(exact-match accuracy, predictions)``."""
    from ..decoding import beam_search_seq2seq

    was_training = model.training
    model.eval()
    predictions = []
    for batch in dataset.batches(batch_size):
        if beam_width == 1:
            tokens, _ = model.greedy_decode(batch.src, batch.src_lengths, max_len=max_len, sos=vocab.SOS,
                                            eos=vocab.EOS)
        else:
            tokens = beam_search_seq2seq(model, batch.src, batch.src_lengths, max_len=max_len, beam_width=beam_width,
                                         alpha=alpha, sos_idx=vocab.SOS, eos_idx=vocab.EOS).tokens
        predictions += vocab.decode_batch(tokens)
    model.train(was_training)
    return exact_match(predictions, dataset.targets), predictions


def train(model, train_set, val_set, vocab, epochs=3, batch_size=64, lr=0.01, clip=5.0, lr_decay=0.5, seed=0,
          progress=True, log=tqdm.write):
    """Adam with gradient clipping, with :func:`npattention.train.fit`; the learning rate is
    multiplied by ``lr_decay`` after every epoch (so a late, large step cannot undo the fit).
    The validation exact match is computed after every epoch (``history["val_exact_match"]``)
    and printed by ``log`` (``tqdm.write`` keeps the progress bar intact; ``None``: silent).
    Returns ``(history, optimizer)``."""
    loss_fn = CrossEntropyLoss(ignore_index=Vocab.PAD)
    optimizer = Adam(model.parameters(), lr=lr)
    scores = []

    def after_epoch(epoch, history):
        optimizer.lr *= lr_decay
        if val_set is not None:
            acc, _ = evaluate(model, val_set, vocab)
            scores.append(acc)
            if log is not None:
                log(f"epoch {epoch}: train loss {history['loss'][-1]:.4f}, validation exact match {acc:.3f}")
        return False

    start = time.perf_counter()
    history = fit(model, optimizer=optimizer, data=train_set, epochs=epochs, batch_size=batch_size,
                  step_fn=make_step(model, loss_fn), clip_grad_norm=clip, seed=seed, progress=progress,
                  callback=after_epoch, desc=f"seq2seq ({model.attention})")
    history["val_exact_match"] = scores
    history["seconds"] = time.perf_counter() - start
    return history, optimizer


def accuracy_by_length(sources, predictions, targets, edges):
    """Exact match per source-length bin: ``[(low, high, n, accuracy), ...]`` for ``low <= len < high``."""
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        idx = [i for i, s in enumerate(sources) if low <= len(s) < high]
        if idx:
            rows.append((low, high, len(idx), exact_match([predictions[i] for i in idx], [targets[i] for i in idx])))
    return rows


def plot_alignments(model, vocab, sources, path=None, title=None):
    """The alignment figure: one map per source (x = input characters, y = output characters).

    Returns the matplotlib Figure (saved to ``path`` if given)."""
    import matplotlib.pyplot as plt

    from ..data import encode_sources
    from ..viz import plot_attention

    src, lengths = encode_sources(sources, vocab)
    tokens, weights = model.greedy_decode(src, lengths, max_len=TARGET_LEN + 1, sos=vocab.SOS, eos=vocab.EOS)
    if weights is None:
        raise ValueError("plot_alignments: this model has no attention (attention='none')")
    n = len(sources)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for k, text in enumerate(sources):
        out = vocab.decode(tokens[k])
        n_out = min(len(out) + 1, tokens.shape[1])  # + <eos>
        n_in = int(lengths[k])
        x_labels = list(text) + ["<eos>"]
        y_labels = (list(out) + ["<eos>"])[:n_out]
        w = to_numpy(weights[k, :n_out, :n_in])
        ax = plot_attention(w, x_labels=x_labels, y_labels=y_labels, ax=axes[k // cols][k % cols],
                            title=f"{text} -> {out}")
        ax.set_xlabel("input characters")
        ax.set_ylabel("output characters")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m npattention demo seq2seq", description=__doc__.split("\n")[0])
    parser.add_argument("--attention", choices=ATTENTIONS, default="bahdanau")
    parser.add_argument("--score", choices=("dot", "general", "concat"), default="dot", help="Luong's score")
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    parser.add_argument("--fast", action="store_true", help="a tiny run (seconds): small data, one epoch")
    parser.add_argument("--epochs", type=positive_int, default=None, help="default 3 (2 with --fast)")
    parser.add_argument("--n-train", type=positive_int, default=None, help="training dates (default 10000, 4000 with --fast)")
    parser.add_argument("--hidden", type=positive_int, default=32, help="encoder hidden size per direction")
    parser.add_argument("--embed", type=positive_int, default=16)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("npattention-output", "seq2seq"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--task", choices=("dates", "reverse"), default="dates",
                        help="dates (default): human dates -> ISO; reverse: strings reversed")
    parser.add_argument("--beam", type=positive_int, default=4, help="also report beam search of this width (1: skip)")
    args = parser.parse_args(argv)
    if args.beam <= 0:
        parser.error(f"--beam must be a positive int, got {args.beam}")
    epochs = args.epochs if args.epochs is not None else (2 if args.fast else 3)
    n_train = args.n_train if args.n_train is not None else (4000 if args.fast else 10000)
    n_test = 200 if args.fast else 1000
    import matplotlib

    matplotlib.use("Agg")

    vocab, data = load_task(args.task, n_train=n_train, n_val=n_test, n_test=n_test, seed=args.seed)
    max_len = max(len(t) for d in data.values() for t in d.targets) + 1
    max_src = max(int(d.src_lengths.max()) for d in data.values())  # for note004's position scores
    model = build_model(vocab, args.attention, args.hidden, args.embed, args.cell, args.score,
                        max_src_len=max_src, seed=args.seed)
    print(f"{args.task}: {n_train} train / {n_test} validation / {n_test} test; model {args.attention} "
          f"({args.cell}, {model.num_parameters()} parameters)")
    history, optimizer = train(model, data["train"], data["val"], vocab, epochs=epochs, batch_size=args.batch_size,
                               lr=args.lr, seed=args.seed, progress=not args.no_progress)
    acc, predictions = evaluate(model, data["test"], vocab, max_len=max_len)
    print(f"trained {history['seconds']:.1f} s; held-out (test) exact match: {acc:.4f}")
    if args.beam > 1:
        start = time.perf_counter()
        beam_acc, beam_pred = evaluate(model, data["test"], vocab, batch_size=100, max_len=max_len, beam_width=args.beam)
        changed = sum(a != b for a, b in zip(beam_pred, predictions))
        print(f"held-out exact match, beam search (width {args.beam}): {beam_acc:.4f} vs greedy {acc:.4f} "
              f"({changed} of {len(predictions)} outputs differ, {time.perf_counter() - start:.1f} s)")
    print("sample translations:")
    for src, pred, tgt in list(zip(data["test"].sources, predictions, data["test"].targets))[:8]:
        print(f"  {src:<28} -> {pred:<12} {'ok' if pred == tgt else 'WRONG (' + tgt + ')'}")

    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, f"seq2seq_{args.attention}.npz")
    save_checkpoint(ckpt, model, optimizer, config=model.config, vocab=vocab.state(), test_exact_match=acc,
                    epochs=epochs, seed=args.seed)
    print(f"checkpoint: {ckpt}")
    if model.attention != "none":
        examples = ["Saturday, Nov 21, 2026", "21.11.2026", "3rd of March 1999", "12/31/85"]
        path = os.path.join(args.out, f"alignment_{args.attention}.png")
        plot_alignments(model, vocab, examples, path, title=f"{args.attention} attention: input x output characters")
        print(f"alignment figure: {path}")
    print(f"outputs in {os.path.abspath(args.out)}")
    return 0
