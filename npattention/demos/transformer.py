"""The main demo: train a small Transformer on a toy translation task, on the CPU.

    python -m npattention demo                       # dates: "Saturday, Nov 21, 2026" -> "2026-11-21"
    python -m npattention demo transformer --task reverse
    python -m npattention demo transformer --fast    # a tiny run in a few seconds

It trains with Adam and a warm-up + cosine learning-rate schedule (progress bar),
prints the held-out exact-match accuracy (greedy decoding, whole string right), the same
with beam search (``--beam 4`` by default; ``--beam 1`` skips it) and a few sample
translations, and writes into ``--out`` (default
``npattention-output/transformer``):

* ``checkpoint.npz``        -- weights + config (``npattention.checkpoint.load_checkpoint``)
* ``encoder_self_attention.png`` -- every head of every encoder layer, one test example
* ``decoder_cross_attention.png`` -- what each output character looked at in the input
* ``decoder_self_attention.png``  -- the causal (lower-triangular) decoder maps
* ``positional_encoding.png``     -- the sinusoidal table as a heatmap
* ``training_curve.png``          -- loss per step

The functions here (:func:`build`, :func:`train`, :func:`evaluate`) are reused by the
tests, the benchmark and the notebooks.
"""
import argparse
import os
import time

from ..backend import manual_seed, to_numpy, xp
from ..data import Vocab, exact_match, load_task
from ..losses import CrossEntropyLoss
from ..optim import Adam, WarmupCosine, clip_grad_norm_
from ..transformer import Transformer, greedy_decode
from . import positive_int

#: per task: data sizes and options, model size and training schedule (tuned to reach
#: >= 99% held-out exact match in about a minute on one CPU core; see docs/transformer.md)
PRESETS = {
    "reverse": dict(data=dict(n_train=6000, min_len=3, max_len=10), epochs=6,
                    model=dict(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                               dim_feedforward=128, dropout=0.0), lr=2e-3, batch_size=64),
    "copy": dict(data=dict(n_train=6000, min_len=3, max_len=10), epochs=4,
                 model=dict(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                            dim_feedforward=128, dropout=0.0), lr=2e-3, batch_size=64),
    "sort": dict(data=dict(n_train=6000, min_len=3, max_len=10), epochs=6,
                 model=dict(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                            dim_feedforward=128, dropout=0.0), lr=2e-3, batch_size=64),
    "dates": dict(data=dict(n_train=8000), epochs=6,
                  model=dict(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                             dim_feedforward=128, dropout=0.0), lr=3e-3, batch_size=64),
}
#: --fast: a few seconds, enough to see the loss fall
FAST = dict(n_train=2000, epochs=4, lr=5e-3, model=dict(d_model=32, nhead=2, num_encoder_layers=1,
                                                num_decoder_layers=1, dim_feedforward=64, dropout=0.0))


def build(vocab, **model_options):
    """A :class:`Transformer` for a task vocabulary (source and target share it)."""
    options = dict(max_len=64, tie_weights=True)
    options.update(model_options)
    return Transformer(len(vocab), len(vocab), pad_idx=Vocab.PAD, **options)


def make_step(model, loss_fn):
    """``step(batch) -> loss``: teacher-forced forward, cross-entropy, backward."""

    def step(batch):
        logits = model(batch.src, batch.tgt_in)  # (B, T, V); masks from the <pad> ids
        loss = loss_fn(logits, batch.tgt_out)
        model.backward(loss_fn.backward())
        return loss

    return step


def train(model, train_set, epochs, batch_size=64, lr=2e-3, warmup=100, clip=1.0, label_smoothing=0.0,
          seed=0, progress=True, desc="train"):
    """Adam + warm-up/cosine schedule + gradient clipping; returns ``{"step_loss": [...], "seconds": t}``.

    (The same loop as :func:`npattention.train.fit`, written out so the demo shows it.)
    """
    from tqdm.auto import tqdm

    loss_fn = CrossEntropyLoss(ignore_index=Vocab.PAD, label_smoothing=label_smoothing)
    opt = Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    steps = epochs * train_set.num_batches(batch_size)
    sched = WarmupCosine(opt, warmup_steps=min(warmup, steps // 4), total_steps=steps, min_lr=lr * 0.02)
    step = make_step(model, loss_fn)
    history = {"step_loss": []}
    start = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc=desc, disable=not progress) as bar:
        for epoch in range(epochs):
            for batch in train_set.batches(batch_size, shuffle=True, seed=seed * 1000 + epoch):
                opt.zero_grad()
                loss = float(step(batch))
                clip_grad_norm_(opt.params, clip)
                opt.step()
                sched.step()
                history["step_loss"].append(loss)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss:.4f}", refresh=False)
    history["seconds"] = time.perf_counter() - start
    return history


def translate(model, dataset, vocab, batch_size=500, max_len=None, beam_width=1, alpha=0.0):
    """Decode every source of ``dataset`` (greedy, or beam search with ``beam_width > 1``
    and length penalty ``alpha``); returns the list of predicted strings."""
    from ..decoding import beam_search_transformer

    if max_len is None:
        max_len = max(len(t) for t in dataset.targets) + 1
    preds = []
    for batch in dataset.batches(batch_size):
        if beam_width == 1:
            ids = greedy_decode(model, batch.src, max_len)
        else:
            ids = beam_search_transformer(model, batch.src, max_len, beam_width=beam_width, alpha=alpha).tokens
        preds += vocab.decode_batch(ids)
    return preds


def evaluate(model, dataset, vocab, batch_size=500, beam_width=1, alpha=0.0):
    """Held-out exact-match accuracy (the whole output string right) and the predictions."""
    preds = translate(model, dataset, vocab, batch_size, beam_width=beam_width, alpha=alpha)
    return exact_match(preds, dataset.targets), preds


def run(task="dates", epochs=None, seed=0, fast=False, progress=True, n_test=1000, **overrides):
    """Data, model and training for one task; returns a dict with everything the demo reports."""
    preset = PRESETS[task]
    data_opts = dict(preset["data"])
    model_opts = dict(preset["model"])
    epochs = preset["epochs"] if epochs is None else epochs
    if fast:
        data_opts["n_train"] = FAST["n_train"]
        model_opts.update(FAST["model"])
        epochs = FAST["epochs"] if epochs == preset["epochs"] else epochs
        n_test = min(n_test, 200)
    data_opts.update(overrides.pop("data", {}))
    model_opts.update(overrides.pop("model", {}))
    n_train = data_opts.pop("n_train")
    vocab, splits = load_task(task, n_train=n_train, n_val=200, n_test=n_test, seed=seed, **data_opts)
    manual_seed(seed)
    model = build(vocab, **model_opts)
    train_opts = dict(batch_size=preset["batch_size"], lr=FAST["lr"] if fast else preset["lr"])
    train_opts.update(overrides)
    history = train(model, splits["train"], epochs, seed=seed, progress=progress, desc=f"{task}", **train_opts)
    start = time.perf_counter()
    acc, preds = evaluate(model, splits["test"], vocab)
    return dict(task=task, model=model, vocab=vocab, splits=splits, history=history, accuracy=acc,
                predictions=preds, eval_seconds=time.perf_counter() - start, epochs=epochs,
                config=dict(model=model.config, data=dict(data_opts, n_train=n_train), epochs=epochs,
                            seed=seed, **train_opts))


# ------------------------------------------------------------------------ figures
def save_figures(result, out):
    """Attention maps of one test example, the positional table and the loss curve; returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..positional import sinusoidal_table
    from ..viz import show_heatmaps

    model, vocab, test = result["model"], result["vocab"], result["splits"]["test"]
    example = test[[0]]
    out_ids = greedy_decode(model, example.src, len(example.targets[0]) + 1)  # leaves last-step maps
    src_tokens = [vocab.itos[i] for i in to_numpy(example.src[0])]
    dec_in = ["<sos>"] + [vocab.itos[i] for i in to_numpy(out_ids[0])][:-1]
    dec_out = [vocab.itos[i] for i in to_numpy(out_ids[0])]
    maps = model.attention_maps()
    paths = {}

    def heads(layers):  # list of (1, H, Tq, Tk) -> (layers, H, Tq, Tk) on the host
        return to_numpy(xp.stack([w[0] for w in layers]))

    H = model.config["nhead"]
    figs = {
        "encoder_self_attention": (heads(maps["encoder"]), src_tokens, src_tokens, "Encoder self-attention"),
        "decoder_cross_attention": (heads(maps["decoder_cross"]), src_tokens, dec_out, "Decoder cross-attention"),
        "decoder_self_attention": (heads(maps["decoder_self"]), dec_in, dec_out, "Decoder (causal) self-attention"),
    }
    for name, (mats, xl, yl, title) in figs.items():
        L = mats.shape[0]
        titles = [[f"layer {i + 1}, head {h + 1}" for h in range(H)] for i in range(L)]
        fig = show_heatmaps(mats, xlabel="keys", ylabel="queries", titles=titles, x_labels=xl, y_labels=yl)
        fig.suptitle(f"{title}: {example.sources[0]!r} -> {vocab.decode(out_ids[0])!r}")
        path = os.path.join(out, name + ".png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths[name] = path

    fig, ax = plt.subplots(figsize=(7, 3.5))
    pe = to_numpy(sinusoidal_table(64, model.d_model))
    im = ax.imshow(pe, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xlabel("dimension i")
    ax.set_ylabel("position t")
    ax.set_title("Sinusoidal positional encoding PE[t, i]")
    fig.colorbar(im, ax=ax)
    paths["positional_encoding"] = os.path.join(out, "positional_encoding.png")
    fig.savefig(paths["positional_encoding"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(result["history"]["step_loss"])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"Training loss ({result['task']})")
    paths["training_curve"] = os.path.join(out, "training_curve.png")
    fig.savefig(paths["training_curve"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m npattention demo transformer",
                                     description="Train a Transformer on a toy translation task (CPU).")
    parser.add_argument("--task", choices=sorted(PRESETS), default="dates",
                        help="dates (default): human-written dates -> ISO; reverse, copy, sort: strings")
    parser.add_argument("--epochs", type=positive_int, default=None, help="passes over the training set (default: per task)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, weights and batch order")
    parser.add_argument("--out", default=os.path.join("npattention-output", "transformer"),
                        help="output folder for the checkpoint and figures")
    parser.add_argument("--fast", action="store_true", help="tiny model and data: a few seconds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--beam", type=positive_int, default=4, help="also report beam search of this width (1: skip)")
    args = parser.parse_args(argv)
    if args.beam <= 0:
        parser.error(f"--beam must be a positive int, got {args.beam}")
    if args.epochs is not None and args.epochs <= 0:
        parser.error(f"--epochs must be a positive int, got {args.epochs}")

    result = run(args.task, epochs=args.epochs, seed=args.seed, fast=args.fast, progress=not args.no_progress)
    model, vocab, test = result["model"], result["vocab"], result["splits"]["test"]
    hist = result["history"]
    print(f"\nTransformer on '{args.task}': {model.num_parameters():,} parameters, "
          f"{len(hist['step_loss'])} steps in {hist['seconds']:.1f} s, final loss {hist['step_loss'][-1]:.4f}")
    print(f"held-out exact match: {result['accuracy']:.2%} of {len(test)} test examples "
          f"(greedy decoding, {result['eval_seconds']:.1f} s)")
    if args.beam > 1:
        start = time.perf_counter()
        beam_acc, beam_preds = evaluate(model, test, vocab, batch_size=100, beam_width=args.beam)
        changed = sum(a != b for a, b in zip(beam_preds, result["predictions"]))
        print(f"held-out exact match, beam search (width {args.beam}, KV cache): {beam_acc:.2%} "
              f"vs greedy {result['accuracy']:.2%} ({changed} of {len(test)} outputs differ, "
              f"{time.perf_counter() - start:.1f} s)")
    print("\nsamples (source -> prediction | target):")
    for src, pred, tgt in list(zip(test.sources, result["predictions"], test.targets))[:8]:
        print(f"  {src!r:>30} -> {pred!r:<14} {'ok' if pred == tgt else 'WRONG, want ' + repr(tgt)}")
    wrong = [(s, p, t) for s, p, t in zip(test.sources, result["predictions"], test.targets) if p != t]
    shown = set(test.sources[:8])
    later = [w for w in wrong if w[0] not in shown]
    if later:
        print(f"more mistakes ({len(wrong)} in all):")
        for src, pred, tgt in later[:4]:
            print(f"  {src!r:>30} -> {pred!r:<14} want {tgt!r}")

    os.makedirs(args.out, exist_ok=True)
    from ..checkpoint import save_checkpoint

    ckpt = save_checkpoint(os.path.join(args.out, "checkpoint.npz"), model, task=args.task,
                           config=result["config"], vocab=vocab.state(), accuracy=result["accuracy"])
    paths = save_figures(result, args.out)
    print(f"\nsaved {os.path.basename(ckpt)} and {len(paths)} figures "
          f"({', '.join(os.path.basename(p) for p in paths.values())})")
    print(f"output folder: {os.path.abspath(args.out)}")
    return 0

