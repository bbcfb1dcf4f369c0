"""``python -m npattention demo vision``: a small CNN with an attention block learns the glyph task.

    python -m npattention demo vision --block cbam            # se | cbam | eca | sagan | pixel | none
    python -m npattention demo vision --block high_order      # MHN high-order | moga (MogaNet)
    python -m npattention demo vision --block se --fast       # a tiny run (seconds)

Trains :class:`npattention.vision.models.AttentionCNN` on :func:`make_glyphs` images (glyphs
on noisy, cluttered backgrounds) on the CPU, prints the held-out accuracy and saves into
``--out``: the weights (``model.npz``), the loss curve, test images with predictions, and
what the block attends to -- CBAM's spatial maps over the images, SE/ECA/CBAM channel
weights per class, pixel-attention maps, SAGAN attention for chosen query pixels, the gate
of each order of MHN's high-order attention, MogaNet's gate and multi-order value maps.
"""
import argparse
import os
import time

from ..backend import manual_seed, np, to_numpy
from ..losses import CrossEntropyLoss
from ..optim import Adam
from ..train import accuracy, fit
from ..data.glyphs import GLYPHS, make_glyphs
from ..vision.models import BLOCKS, AttentionCNN
from . import nonneg_float, nonneg_int, positive_float, positive_int


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m npattention demo vision", description=__doc__.split("\n")[0])
    p.add_argument("--block", choices=BLOCKS, default="cbam", help="attention block inside the CNN (default cbam)")
    p.add_argument("--fast", action="store_true", help="small data, two short epochs (a smoke run of a few seconds)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 6, --fast 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, weights and batch order")
    p.add_argument("--out", default=os.path.join("npattention-output", "vision"), help="output folder")
    p.add_argument("--n-train", type=positive_int, default=None, help="training images (default 4000, --fast 1000)")
    p.add_argument("--n-test", type=positive_int, default=None, help="held-out images (default 1000, --fast 200)")
    p.add_argument("--size", type=positive_int, default=28, help="image side in pixels (default 28)")
    p.add_argument("--channels", type=positive_int, default=1, help="image channels (default 1)")
    p.add_argument("--clutter", type=nonneg_int, default=10, help="clutter fragments per image (default 10)")
    p.add_argument("--noise", type=nonneg_float, default=0.3, help="std of the pixel noise (default 0.3)")
    p.add_argument("--width", type=positive_int, default=8, help="CNN width: channels w, 2w, 2w (default 8)")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (2 if args.fast else 6)
    args.n_train = args.n_train or (1000 if args.fast else 4000)
    args.n_test = args.n_test or (200 if args.fast else 1000)
    return args


def train(args, progress=True):
    """Build data and model from ``args``, train; return ``(model, history, test_data, seconds)``."""
    data = {"size": args.size, "channels": args.channels, "clutter": args.clutter, "noise": args.noise}
    train_data = make_glyphs(args.n_train, seed=args.seed, **data)
    test_data = make_glyphs(args.n_test, seed=args.seed + 10_000, **data)
    manual_seed(args.seed)
    model = AttentionCNN(args.channels, len(GLYPHS), block=args.block, width=args.width)
    start = time.perf_counter()
    history = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=args.lr), train_data,
                  epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, progress=progress,
                  desc=f"vision/{args.block}")
    return model, history, test_data, time.perf_counter() - start


def collect_gates(model, images):
    """Run ``model`` in eval mode on ``images``; return its logits and the block's maps (host arrays)."""
    model.eval()
    logits = model(images)
    block = model.block
    maps = {}
    if model.block_name == "cbam":
        maps["channel"] = to_numpy(block.last_channel_gate)[:, :, 0, 0]     # (N, C)
        maps["spatial"] = to_numpy(block.last_spatial_gate)[:, 0]           # (N, h, w)
    elif model.block_name in ("se", "eca"):
        maps["channel"] = to_numpy(block.last_gate)                         # (N, C)
    elif model.block_name == "pixel":
        maps["pixel"] = to_numpy(block.last_gate).mean(axis=1)              # (N, h, w), mean over C
    elif model.block_name == "sagan":
        maps["attention"] = to_numpy(model.last_attention)                  # (N, hw, hw)
    elif model.block_name == "high_order":
        maps["orders"] = to_numpy(block.last_gates).mean(axis=2)           # (N, R, h, w), mean over C
    elif model.block_name == "moga":
        maps["moga"] = np.stack([to_numpy(block.last_gate).mean(axis=1),   # (N, 2, h, w): SiLU(g), SiLU(v)
                                 to_numpy(block.last_value).mean(axis=1)], axis=1)
    model.train()
    return to_numpy(logits), maps


def per_class_mean(gates, labels, n_classes):
    """``(n_classes, C)``: the average channel gate of the images of each class."""
    return np.stack([gates[labels == k].mean(axis=0) for k in range(n_classes)])


# ---------------------------------------------------------------- figures
def _overlay_grid(images, maps, labels, preds, title, path, n=8):
    import matplotlib.pyplot as plt

    n = min(n, len(images))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 4.2))
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray")
        axes[0, i].set_title(f"{GLYPHS[labels[i]]}\n-> {GLYPHS[preds[i]]}", fontsize=7)
        axes[1, i].imshow(maps[i], cmap="viridis")         # own colour scale per image: see the title
        axes[1, i].set_title(f"gate {maps[i].min():.2f}..{maps[i].max():.2f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rows_figure(images, stacks, row_names, labels, preds, title, path, n=8):
    """Row 0: the images; row r: ``stacks[:, r - 1]`` (one map per image), each with its own colour bar."""
    import matplotlib.pyplot as plt

    n = min(n, len(images))
    rows = 1 + stacks.shape[1]
    fig, axes = plt.subplots(rows, n, figsize=(1.7 * n, 1.9 * rows), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray")
        axes[0, i].set_title(f"{GLYPHS[labels[i]]} -> {GLYPHS[preds[i]]}", fontsize=7)
        for r in range(1, rows):
            im = axes[r, i].imshow(stacks[i, r - 1], cmap="viridis")
            cb = fig.colorbar(im, ax=axes[r, i], fraction=0.046, pad=0.02)
            cb.ax.tick_params(labelsize=5)
    for r, name in enumerate(["input"] + list(row_names)):
        axes[r, 0].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _channel_weights_figure(table, title, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(0.3 * table.shape[1] + 2.5, 0.35 * table.shape[0] + 1.5))
    im = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(table)))
    ax.set_yticklabels(GLYPHS[:len(table)])
    ax.set_xlabel("channel")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="mean gate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sagan_figure(image, attention, queries, path):
    import matplotlib.pyplot as plt

    h = w = round(attention.shape[-1] ** 0.5)
    S = image.shape[0]
    fig, axes = plt.subplots(1, len(queries) + 1, figsize=(2.2 * (len(queries) + 1), 2.4))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input", fontsize=8)
    for ax, (qi, qj) in zip(axes[1:], queries):
        ax.imshow(image, cmap="gray")
        ax.imshow(attention[qi * w + qj].reshape(h, w), cmap="jet", alpha=0.55,
                  extent=(-0.5, S - 0.5, S - 0.5, -0.5))
        scale = S / w
        ax.plot([(qj + 0.5) * scale - 0.5], [(qi + 0.5) * scale - 0.5], "w*", markersize=12, markeredgecolor="k")
        ax.set_title(f"query ({qi}, {qj})", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_figures(model, history, test_data, out):
    """Write the figures for ``model``'s block into ``out``; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = test_data
    logits, maps = collect_gates(model, x)
    labels, preds = to_numpy(y), logits.argmax(axis=1)
    imgs = to_numpy(x).mean(axis=1)                                  # grey view for plotting
    files = []

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(range(1, len(history["loss"]) + 1), history["loss"], "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(f"AttentionCNN, block={model.block_name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=110)
    plt.close(fig)
    files.append("loss.png")

    if "spatial" in maps:
        _overlay_grid(imgs, maps["spatial"], labels, preds, "CBAM spatial gate (bright = kept)",
                      os.path.join(out, "cbam_spatial.png"))
        files.append("cbam_spatial.png")
    if "pixel" in maps:
        _overlay_grid(imgs, maps["pixel"], labels, preds, "pixel attention, mean gate over channels",
                      os.path.join(out, "pixel_attention.png"))
        files.append("pixel_attention.png")
    if "channel" in maps:
        table = per_class_mean(maps["channel"], labels, len(GLYPHS))
        name = f"{model.block_name}_channel_weights.png"
        _channel_weights_figure(table, f"{model.block_name.upper()} channel weights per class (test images)",
                                os.path.join(out, name))
        files.append(name)
    if "attention" in maps:
        h = round(maps["attention"].shape[-1] ** 0.5)
        k = int(np.argmax(preds == labels)) if (preds == labels).any() else 0
        queries = [(h // 2, h // 2), (h // 4, h // 2), (1, 1), (h - 2, h - 2)]
        _sagan_figure(imgs[k], maps["attention"][k], queries, os.path.join(out, "sagan_attention.png"))
        files.append("sagan_attention.png")
    if "orders" in maps:
        R = maps["orders"].shape[1]
        _rows_figure(imgs, maps["orders"], [f"order {r} gate" for r in range(1, R + 1)], labels, preds,
                     "MHN high-order attention: each order's gate s_r (mean over channels)",
                     os.path.join(out, "high_order_gates.png"))
        files.append("high_order_gates.png")
    if "moga" in maps:
        _rows_figure(imgs, maps["moga"], ["SiLU(gate)", "SiLU(value)"], labels, preds,
                     "MogaNet: gate and multi-order value (mean over channels)", os.path.join(out, "moga_gates.png"))
        files.append("moga_gates.png")
    if not maps:
        _overlay_grid(imgs, np.zeros_like(imgs), labels, preds, "test images (no attention block)",
                      os.path.join(out, "samples.png"))
        files.append("samples.png")
    return files


def main(argv=None):
    args = parse_args(argv)
    if args.block == "sagan":
        try:
            from ..vision import sagan  # noqa: F401
        except ImportError:
            print("block 'sagan' is not available yet (npattention/vision/sagan.py is missing); "
                  "choose --block se|cbam|eca|pixel|none")
            return 2
    os.makedirs(args.out, exist_ok=True)
    print(f"glyph task: {args.n_train} training / {args.n_test} held-out images, {args.size}x{args.size}, "
          f"{args.channels} channel(s), {len(GLYPHS)} classes, clutter={args.clutter}, noise={args.noise}; "
          f"block={args.block}")
    model, history, test_data, seconds = train(args)
    acc = accuracy(model, test_data)
    print(f"held-out accuracy: {acc:.3f} (block={args.block}, {args.epochs} epoch(s), "
          f"{model.num_parameters()} parameters, {seconds:.1f} s training)")
    np.savez(os.path.join(args.out, "model.npz"), **{k: to_numpy(v) for k, v in model.state_dict().items()})
    if not args.no_plots:
        files = save_figures(model, history, test_data, args.out)
        print("figures: " + ", ".join(files))
    print(f"outputs written to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
