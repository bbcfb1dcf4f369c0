"""Demo: a spatial transformer learns to undo random translations, rotations and scalings.

    python -m npattention demo stn [--fast] [--epochs N] [--seed S] [--out DIR]

Glyphs (:func:`npattention.vision.data.make_glyphs` with ``distort=True``) are randomly
rotated (+-40 degrees), scaled and moved.  Two classifiers get the same budget (epochs,
batch size, learning rate, initial weights of the classifier part):

* **baseline**: ``Flatten -> Linear -> ReLU -> Linear`` on the raw image;
* **STN**: the same classifier behind a :class:`~npattention.vision.stn.SpatialTransformer`
  whose localisation net is trained only through the classification loss.

A fully connected classifier has no built-in translation invariance, so it gains most
from a front end that re-centres and zooms.  The demo prints held-out accuracies, how
well the learned ``theta`` tracks the true distortion (correlations), and writes to
``--out``: ``stn_before_after.png`` (inputs and what the STN passes on),
``stn_grids.png`` (the sampling grid drawn over each input), ``stn_training.png``
(loss curves) and ``stn_checkpoint.npz``.
"""
import argparse
import os
import time

from ..backend import manual_seed, np, to_numpy, xp
from ..layers import Linear, ReLU
from ..losses import CrossEntropyLoss
from ..module import Sequential
from ..optim import Adam
from ..train import accuracy, fit
from ..data.glyphs import GLYPHS, make_glyphs
from ..vision.layers import Flatten
from ..vision.stn import SpatialTransformer
from . import nonneg_int, positive_float, positive_int


def build_model(size, channels=1, n_classes=len(GLYPHS), hidden=64, stn=True, loc_hidden=32, seed=0):
    """``[SpatialTransformer ->] Flatten -> Linear -> ReLU -> Linear``.

    The classifier part is initialised from ``seed`` *before* the STN, so the models with
    and without STN start from identical classifier weights.
    """
    manual_seed(seed)
    classifier = [Flatten(), Linear(channels * size * size, hidden), ReLU(), Linear(hidden, n_classes)]
    if not stn:
        return Sequential(*classifier)
    return Sequential(SpatialTransformer(channels, size, size, hidden=loc_hidden), *classifier)


def theta_agreement(stn, images, true_theta):
    """Correlations between the learned and the true affine parameters on ``images``.

    ``true_theta`` maps the canonical glyph to the image (see ``make_glyphs``), which is
    exactly a grid that samples the glyph back upright and centred; so a good STN's
    translation ``theta[:, :, 2]`` follows the true one.  Returns a dict of floats.
    """
    learned, _ = stn.localize(images)
    learned, true = to_numpy(learned).astype(np.float64), to_numpy(true_theta).astype(np.float64)

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0

    angle = lambda t: np.arctan2(t[:, 1, 0] - t[:, 0, 1], t[:, 0, 0] + t[:, 1, 1])  # rotation part
    sv = np.linalg.svd(learned[:, :, :2], compute_uv=False)  # (n, 2): the zooms along A's principal axes
    return {"tx": corr(learned[:, 0, 2], true[:, 0, 2]),
            "ty": corr(learned[:, 1, 2], true[:, 1, 2]),
            "angle": corr(angle(learned), angle(true)),
            "mean_scale": float(np.mean(np.sqrt(np.abs(np.linalg.det(learned[:, :, :2]))))),
            # how much wider the sampled region is along one axis than along the other (1 = isotropic)
            "anisotropy": float(np.mean(sv[:, 0] / np.maximum(sv[:, 1], 1e-12))),
            "scale_x": float(np.mean(np.linalg.norm(learned[:, :, 0], axis=1))),
            "scale_y": float(np.mean(np.linalg.norm(learned[:, :, 1], axis=1)))}


def grid_to_pixels(grid, height, width):
    """Normalised grid ``(..., 2)`` -> pixel coordinates ``(col, row)`` for
    ``align_corners=False`` (the centre of pixel ``j`` is at ``j``, as ``imshow`` draws it)."""
    g = to_numpy(grid)
    return (g[..., 0] + 1) * width / 2 - 0.5, (g[..., 1] + 1) * height / 2 - 0.5


def draw_grid(ax, grid, height, width, every=3, color="tab:red"):
    """Draw the sampling grid ``(H_out, W_out, 2)`` over an image on ``ax``: every
    ``every``-th row/column of sample points as lines and the border as a thick outline."""
    cols, rows = grid_to_pixels(grid, height, width)
    for i in range(0, cols.shape[0], every):
        ax.plot(cols[i], rows[i], color=color, lw=0.6, alpha=0.7)
    for j in range(0, cols.shape[1], every):
        ax.plot(cols[:, j], rows[:, j], color=color, lw=0.6, alpha=0.7)
    edge_c = np.concatenate([cols[0], cols[:, -1], cols[-1, ::-1], cols[::-1, 0]])
    edge_r = np.concatenate([rows[0], rows[:, -1], rows[-1, ::-1], rows[::-1, 0]])
    ax.plot(edge_c, edge_r, color=color, lw=1.8)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)


def plot_before_after(stn, images, labels, path=None, title=None):
    """Top row: the distorted inputs with the sampling grid; bottom row: the STN's output."""
    import matplotlib.pyplot as plt

    out = to_numpy(stn(images))
    grids, imgs = stn.grid, to_numpy(images)
    n, _, H, W = imgs.shape
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.3), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(imgs[k, 0], cmap="gray", vmin=0, vmax=1)
        draw_grid(axes[0, k], grids[k], H, W)
        axes[0, k].set_title(GLYPHS[int(labels[k])], fontsize=9)
        axes[1, k].imshow(out[k, 0], cmap="gray", vmin=0, vmax=1)
    for ax in axes.ravel():
        ax.set_aspect("equal")  # square pixels: a glyph that looks squashed IS squashed (by theta)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input + grid")
    axes[1, 0].set_ylabel("STN output")
    fig.suptitle(title or "The spatial transformer re-centres and zooms (red: where it samples)")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_grids(stn, images, path=None, every=2):
    """The sampling grid alone over each input, denser than in :func:`plot_before_after`."""
    import matplotlib.pyplot as plt

    stn(images)
    imgs = to_numpy(images)
    n, _, H, W = imgs.shape
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(imgs[k, 0], cmap="gray", vmin=0, vmax=1)
        draw_grid(ax, stn.grid[k], H, W, every=every, color="tab:orange")
        t = to_numpy(stn.theta[k])
        ax.set_title(f"[{t[0, 0]:.2f} {t[0, 1]:.2f} {t[0, 2]:.2f}]\n[{t[1, 0]:.2f} {t[1, 1]:.2f} {t[1, 2]:.2f}]",
                     fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Sampling grids (theta above each image)")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def train_pair(size=28, n_train=5000, n_test=1000, epochs=15, batch_size=64, lr=1e-3, clutter=2,
               noise=0.1, seed=0, baseline=True, progress=True):
    """Train the STN model (and the baseline) on distorted glyphs; return a results dict."""
    X, y = make_glyphs(n_train, size=size, distort=True, clutter=clutter, noise=noise, seed=seed)
    Xt, yt, theta_t = make_glyphs(n_test, size=size, distort=True, clutter=clutter, noise=noise,
                                  seed=seed + 1000, return_theta=True)
    results = {"data": (X, y, Xt, yt, theta_t)}
    for name in (("baseline", "stn") if baseline else ("stn",)):
        model = build_model(size, stn=(name == "stn"), seed=seed)
        start = time.perf_counter()
        history = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=lr), (X, y),
                      epochs=epochs, batch_size=batch_size, seed=seed, progress=progress, desc=name)
        results[name] = {"model": model, "history": history, "seconds": time.perf_counter() - start,
                         "train_acc": accuracy(model, (X, y)), "test_acc": accuracy(model, (Xt, yt))}
    results["agreement"] = theta_agreement(results["stn"]["model"][0], Xt, theta_t)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m npattention demo stn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny run (16 px, 1500 images, a few epochs)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 15; 6 with --fast)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=positive_int, default=None, help="image side in pixels (default 28; 16 with --fast)")
    parser.add_argument("--n-train", type=positive_int, default=None, help="training images (default 5000; 1500 with --fast)")
    parser.add_argument("--clutter", type=nonneg_int, default=2, help="line fragments per image")
    parser.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default 1e-3; 2e-3 with --fast)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the model without STN")
    parser.add_argument("--out", default=os.path.join("npattention-output", "stn"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = args.size or (16 if args.fast else 28)
    n_train = args.n_train or (1500 if args.fast else 5000)
    epochs = args.epochs or (6 if args.fast else 15)
    lr = args.lr or (2e-3 if args.fast else 1e-3)
    os.makedirs(args.out, exist_ok=True)
    print(f"distorted glyphs: {n_train} train / 1000 test images, {size}x{size}, {len(GLYPHS)} classes, "
          f"{epochs} epochs, Adam lr={lr}")
    res = train_pair(size=size, n_train=n_train, epochs=epochs, lr=lr, clutter=args.clutter, seed=args.seed,
                     baseline=not args.no_baseline)
    X, y, Xt, yt, _ = res["data"]
    for name in ("baseline", "stn"):
        if name in res:
            r = res[name]
            print(f"{name:>8}: held-out accuracy {r['test_acc']:.3f} (train {r['train_acc']:.3f}), "
                  f"{r['seconds']:.1f} s")
    a = res["agreement"]
    print(f"learned vs true theta on held-out images: corr(tx) = {a['tx']:.2f}, corr(ty) = {a['ty']:.2f}, "
          f"corr(angle) = {a['angle']:.2f}, mean zoom |det A|^1/2 = {a['mean_scale']:.2f}")

    stn_model = res["stn"]["model"]
    stn = stn_model[0]
    pick = xp.arange(8)
    plot_before_after(stn, Xt[pick], to_numpy(yt[pick]), os.path.join(args.out, "stn_before_after.png"))
    plot_grids(stn, Xt[:5], os.path.join(args.out, "stn_grids.png"))
    fig, ax = plt.subplots(figsize=(5, 3))
    for name in ("baseline", "stn"):
        if name in res:
            ax.plot(range(1, epochs + 1), res[name]["history"]["loss"], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "stn_training.png"), dpi=110)
    plt.close(fig)
    from ..checkpoint import save_checkpoint

    save_checkpoint(os.path.join(args.out, "stn_checkpoint.npz"), stn_model, size=size, epochs=epochs,
                    test_acc=res["stn"]["test_acc"])
    print(f"figures and checkpoint written to {os.path.abspath(args.out)}")
    return 0
