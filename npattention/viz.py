"""Pictures of attention: weight maps, grids of maps (heads, layers), masks.

Every function accepts NumPy or CuPy arrays (they are moved to the host with
:func:`npattention.backend.to_numpy`) and imports matplotlib lazily, so importing
``npattention`` never needs a display.

* :func:`plot_attention` -- one ``(Tq, Tk)`` map; x axis = keys, y axis = queries.
* :func:`show_heatmaps` -- a grid of maps ``(rows, cols, Tq, Tk)`` with one shared
  colorbar (like d2l's ``show_heatmaps``): e.g. rows = layers, cols = heads.
* :func:`plot_mask` -- a boolean mask (True = masked out, drawn dark).
"""
from .backend import to_numpy


def _labels(labels, n, name, where):
    """Token labels as a list of n strings (None -> no labels)."""
    if labels is None:
        return None
    labels = [str(t) for t in labels]
    if len(labels) != n:
        raise ValueError(f"{where}: {name!r} has {len(labels)} labels but the map has {n} positions")
    return labels


def _as_map(a, name, where):
    """A 2-D host array; a leading axis of size 1 (batch) is squeezed."""
    a = to_numpy(a)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{where}: {name!r} must be a (Tq, Tk) map, got shape {tuple(a.shape)}")
    return a


def _auto_size(shape):
    """A figure size for one (Tq, Tk) map: grows with the map, capped for large ones."""
    tq, tk = shape
    return min(1.5 + 0.45 * max(tk, 4), 9.0), min(0.8 + 0.4 * max(tq, 3), 7.0)


def _ticks(ax, x_labels, y_labels):
    from matplotlib.ticker import FixedLocator, MaxNLocator

    # positions are integers: never show ticks like 0.5 between rows.  A shared axis that
    # already carries token labels (a FixedLocator) keeps them.
    for axis in (ax.xaxis, ax.yaxis):
        if not isinstance(axis.get_major_locator(), FixedLocator):
            axis.set_major_locator(MaxNLocator(integer=True))
    if x_labels is not None:
        ax.set_xticks(range(len(x_labels)))
        ax.set_xticklabels(x_labels, rotation=90 if max(map(len, x_labels), default=0) > 2 else 0)
    if y_labels is not None:
        ax.set_yticks(range(len(y_labels)))
        ax.set_yticklabels(y_labels)


def plot_attention(weights, x_labels=None, y_labels=None, ax=None, title=None, cmap="viridis"):
    """Draw one attention map ``weights`` of shape ``(Tq, Tk)`` (or ``(1, Tq, Tk)``).

    Row i = query i (y axis, labelled by ``y_labels``), column j = key j (x axis,
    ``x_labels``); a colorbar shows the weight scale.  Returns the Axes.
    """
    import matplotlib.pyplot as plt

    w = _as_map(weights, "weights", "plot_attention")
    x_labels = _labels(x_labels, w.shape[1], "x_labels", "plot_attention")
    y_labels = _labels(y_labels, w.shape[0], "y_labels", "plot_attention")
    if ax is None:
        _, ax = plt.subplots(figsize=_auto_size(w.shape))
    im = ax.imshow(w, cmap=cmap, aspect="auto")
    ax.figure.colorbar(im, ax=ax)
    _ticks(ax, x_labels, y_labels)
    ax.set_xlabel("keys")
    ax.set_ylabel("queries")
    if title is not None:
        ax.set_title(title)
    return ax


def show_heatmaps(matrices, xlabel="Keys", ylabel="Queries", titles=None, x_labels=None,
                  y_labels=None, figsize=None, cmap="Reds"):
    """Draw a grid of maps ``matrices`` of shape ``(rows, cols, Tq, Tk)``; return the Figure.

    ``titles``: one per column (a list of ``cols`` strings) or one per map (a
    ``rows x cols`` nested list).  The colour scale is shared by all maps (one
    colorbar), so maps can be compared.  Only the bottom row gets ``xlabel`` and the
    key labels; only the left column gets ``ylabel`` and the query labels.
    """
    import matplotlib.pyplot as plt

    m = to_numpy(matrices)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[None]
    if m.ndim != 4:
        raise ValueError(f"show_heatmaps: 'matrices' must have shape (rows, cols, Tq, Tk), got {tuple(m.shape)}")
    rows, cols, tq, tk = m.shape
    x_labels = _labels(x_labels, tk, "x_labels", "show_heatmaps")
    y_labels = _labels(y_labels, tq, "y_labels", "show_heatmaps")
    if figsize is None:
        cell_w, cell_h = min(0.8 + 0.3 * tk, 3.2), min(0.6 + 0.3 * tq, 3.0)  # inches per map, capped
        figsize = (min(1.2 + cols * cell_w, 16.0), min(0.6 + rows * cell_h, 12.0))
    fig, axes = plt.subplots(rows, cols, figsize=figsize, sharex=True, sharey=True, squeeze=False)
    vmin, vmax = float(m.min()), float(m.max())
    if vmin == vmax:
        vmax = vmin + 1.0
    im = None
    for i in range(rows):  # a loop over subplots, not over data
        for j in range(cols):
            ax = axes[i, j]
            im = ax.imshow(m[i, j], cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            _ticks(ax, x_labels if i == rows - 1 else None, y_labels if j == 0 else None)
            if i == rows - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabel)
            if titles is not None:
                t = titles[i][j] if isinstance(titles[0], (list, tuple)) else (titles[j] if i == 0 else None)
                if t is not None:
                    ax.set_title(str(t))
    fig.colorbar(im, ax=axes, shrink=0.6)
    return fig


def plot_mask(mask, ax=None, title=None):
    """Draw a boolean mask of shape ``(Tq, Tk)``: True (masked out) dark, False light.

    Returns the Axes.
    """
    import matplotlib.pyplot as plt

    m = _as_map(mask, "mask", "plot_mask")
    if m.dtype != bool:
        raise TypeError(f"plot_mask: 'mask' must be a boolean array (True = masked out), got dtype {m.dtype}")
    if ax is None:
        _, ax = plt.subplots(figsize=_auto_size(m.shape))
    im = ax.imshow(m.astype(float), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    cbar = ax.figure.colorbar(im, ax=ax, ticks=[0.0, 1.0])
    cbar.ax.set_yticklabels(["attend", "masked"])
    _ticks(ax, None, None)
    ax.set_xlabel("keys")
    ax.set_ylabel("queries")
    if title is not None:
        ax.set_title(title)
    return ax
