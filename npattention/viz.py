"""Pictures of attention: weight maps, grids of maps (heads, layers), masks, any heat map.

Every function accepts NumPy or CuPy arrays (they are moved to the host with
:func:`npattention.backend.to_numpy`) and imports matplotlib lazily, so importing
``npattention`` never needs a display.

One convention for every figure of the project (the notebooks use these functions or
these constants):

* attention weights and other non-negative maps: colour map :data:`CMAP` (``viridis``),
  scale from 0;
* signed maps (encodings, scores, differences): :data:`CMAP_SIGNED` (``RdBu_r``), with
  limits symmetric about 0 so that white means 0;
* masks: :data:`CMAP_MASK` (``Greys``), dark = masked out (True);
* images: :data:`CMAP_IMAGE` (``gray``).

Every heat map gets a colour bar, axis labels, and token or index labels on its axes.  A
space token is shown as ``"␣"`` (:func:`token_labels`) so it is never an empty label.
Maps drawn side by side by :func:`show_heatmaps` share one colour scale.

* :func:`plot_attention` -- one ``(Tq, Tk)`` map; x axis = keys, y axis = queries.
* :func:`show_heatmaps` -- a grid of maps ``(rows, cols, Tq, Tk)`` with one shared
  colorbar (like d2l's ``show_heatmaps``): e.g. rows = layers, cols = heads.
* :func:`plot_heatmap` -- any 2-D array (gates, encodings, rotation matrices).
* :func:`plot_mask` -- a boolean mask (True = masked out, drawn dark).
"""
from .backend import to_numpy

CMAP = "viridis"
CMAP_SIGNED = "RdBu_r"
CMAP_MASK = "Greys"
CMAP_IMAGE = "gray"
SPACE = "\u2423"  # "␣", how a space token is drawn


def token_labels(tokens):
    """Tokens as tick labels: a list of strings, with a space shown as ``"␣"``.

    ``token_labels("a b")`` -> ``['a', '␣', 'b']``; a list of token strings works too.  Only
    a token that is all spaces is replaced (a label such as ``"head 1"`` keeps its space).
    """
    return [SPACE * len(str(t)) if str(t) and not str(t).strip(" ") else str(t) for t in tokens]


def _labels(labels, n, name, where):
    """Token labels as a list of n strings (None -> no labels; a space -> "␣")."""
    if labels is None:
        return None
    labels = token_labels(labels)
    if len(labels) != n:
        raise ValueError(f"{where}: {name!r} has {len(labels)} labels but the map has {n} positions")
    return labels


def _as_map(a, name, where):
    """A 2-D host array; a leading axis of size 1 (batch) is squeezed."""
    a = to_numpy(a)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{where}: {name!r} must be a 2-D (rows, columns) map, got shape {tuple(a.shape)}")
    return a


def _auto_size(shape):
    """A figure size for one (Tq, Tk) map: grows with the map, capped for large ones."""
    tq, tk = shape
    return min(1.5 + 0.45 * max(tk, 4), 9.0), min(0.8 + 0.4 * max(tq, 3), 7.0)


def _ticks(ax, x_labels, y_labels):
    from matplotlib.ticker import FixedLocator, MaxNLocator

    # positions are integers (index labels): never show ticks like 0.5 between rows.  A
    # shared axis that already carries token labels (a FixedLocator) keeps them.
    for axis in (ax.xaxis, ax.yaxis):
        if not isinstance(axis.get_major_locator(), FixedLocator):
            axis.set_major_locator(MaxNLocator(integer=True))
    if x_labels is not None:
        ax.set_xticks(range(len(x_labels)))
        ax.set_xticklabels(x_labels, rotation=90 if max(map(len, x_labels), default=0) > 2 else 0)
    if y_labels is not None:
        ax.set_yticks(range(len(y_labels)))
        ax.set_yticklabels(y_labels)


def _limits(m, signed, vmin, vmax):
    """Colour limits: symmetric about 0 for signed maps, from 0 for non-negative ones."""
    finite = m[(m - m) == 0] if m.size else m  # drops nan and +-inf (host array methods only)
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if signed is None:
        signed = lo < 0
    if signed:
        r = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -r, r
    else:
        lo = min(lo, 0.0)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    if vmax <= vmin:
        vmax = vmin + 1.0
    return signed, vmin, vmax


def plot_heatmap(matrix, x_labels=None, y_labels=None, ax=None, title=None, xlabel="column", ylabel="row",
                 cbar_label=None, signed=None, vmin=None, vmax=None, cmap=None, aspect="auto"):
    """Draw any 2-D array as a heat map with a colour bar, axis labels and tick labels.

    ``signed=None`` decides from the data: a map with negative entries is drawn with
    :data:`CMAP_SIGNED` and limits symmetric about 0, otherwise :data:`CMAP` from 0.
    Pass ``vmin``/``vmax`` to share a scale between separate calls.  Returns the Axes
    (the colour bar is ``ax.images[0].colorbar``).
    """
    import matplotlib.pyplot as plt

    m = _as_map(matrix, "matrix", "plot_heatmap")
    x_labels = _labels(x_labels, m.shape[1], "x_labels", "plot_heatmap")
    y_labels = _labels(y_labels, m.shape[0], "y_labels", "plot_heatmap")
    signed, vmin, vmax = _limits(m, signed, vmin, vmax)
    if cmap is None:
        cmap = CMAP_SIGNED if signed else CMAP
    if ax is None:
        _, ax = plt.subplots(figsize=_auto_size(m.shape))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect)
    cbar = ax.figure.colorbar(im, ax=ax)
    if cbar_label:
        cbar.set_label(cbar_label)
    _ticks(ax, x_labels, y_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_attention(weights, x_labels=None, y_labels=None, ax=None, title=None, cmap=None,
                   xlabel="keys", ylabel="queries", vmin=0.0, vmax=None):
    """Draw one attention map ``weights`` of shape ``(Tq, Tk)`` (or ``(1, Tq, Tk)``).

    Row i = query i (y axis, labelled by ``y_labels``), column j = key j (x axis,
    ``x_labels``); without labels the axes show the indices.  A colour bar shows the
    weight scale (from ``vmin`` = 0 to the largest weight, or ``vmax``: pass ``vmax=1``
    to compare separate figures).  Change ``xlabel``/``ylabel`` when rows are not
    queries (e.g. one row per sentence).  Returns the Axes.  Attention weights are never
    negative: a map with negative entries (scores, say) raises ``ValueError`` -- draw it
    with :func:`plot_heatmap`, which centres signed maps on 0.
    """
    w = _as_map(weights, "weights", "plot_attention")
    if w.size and (w < 0).any():
        raise ValueError(f"plot_attention: 'weights' has negative entries (min {float(w[w < 0].min()):.3g}); "
                         "attention weights are >= 0 -- draw scores or other signed maps with plot_heatmap")
    return plot_heatmap(weights, x_labels, y_labels, ax=ax, title=title, xlabel=xlabel, ylabel=ylabel,
                        cbar_label="attention weight", signed=False, vmin=vmin, vmax=vmax,
                        cmap=cmap or CMAP)


def show_heatmaps(matrices, xlabel="keys", ylabel="queries", titles=None, x_labels=None,
                  y_labels=None, figsize=None, cmap=None, cbar_label="attention weight", signed=None,
                  vmin=None, vmax=None):
    """Draw a grid of maps ``matrices`` of shape ``(rows, cols, Tq, Tk)``; return the Figure.

    ``titles``: one per column (a list of ``cols`` strings) or one per map (a
    ``rows x cols`` nested list).  The colour scale is shared by all maps (one
    colorbar, from 0 for non-negative maps, symmetric about 0 for signed ones), so maps
    can be compared.  Only the bottom row gets ``xlabel`` and the key labels; only the
    left column gets ``ylabel`` and the query labels.
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
    signed, vmin, vmax = _limits(m, signed, vmin, vmax)
    if cmap is None:
        cmap = CMAP_SIGNED if signed else CMAP
    if figsize is None:
        cell_w, cell_h = min(0.8 + 0.3 * tk, 3.2), min(0.6 + 0.3 * tq, 3.0)  # inches per map, capped
        figsize = (min(1.6 + cols * cell_w, 16.0), min(0.8 + rows * cell_h, 12.0))
    fig, axes = plt.subplots(rows, cols, figsize=figsize, sharex=True, sharey=True, squeeze=False)
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
    cbar = fig.colorbar(im, ax=axes, shrink=0.8 if rows > 1 else 1.0)
    if cbar_label:
        cbar.set_label(cbar_label)
    return fig


def plot_mask(mask, ax=None, title=None, x_labels=None, y_labels=None, xlabel="keys", ylabel="queries"):
    """Draw a boolean mask of shape ``(Tq, Tk)``: True (masked out) dark, False light.

    Returns the Axes.
    """
    import matplotlib.pyplot as plt

    m = _as_map(mask, "mask", "plot_mask")
    if m.dtype != bool:
        raise TypeError(f"plot_mask: 'mask' must be a boolean array (True = masked out), got dtype {m.dtype}")
    x_labels = _labels(x_labels, m.shape[1], "x_labels", "plot_mask")
    y_labels = _labels(y_labels, m.shape[0], "y_labels", "plot_mask")
    if ax is None:
        _, ax = plt.subplots(figsize=_auto_size(m.shape))
    im = ax.imshow(m.astype(float), cmap=CMAP_MASK, vmin=0.0, vmax=1.0, aspect="auto")
    cbar = ax.figure.colorbar(im, ax=ax, ticks=[0.0, 1.0])
    cbar.ax.set_yticklabels(["attend", "masked"])
    _ticks(ax, x_labels, y_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax
