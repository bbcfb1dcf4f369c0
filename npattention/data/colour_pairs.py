"""Colour pairs: a per-cell lookup task in which every query pixel must find its own partner.

Each image is a ``grid x grid`` board of 3x3-pixel cells on a dark, slightly noisy
background (so the image side is ``3 * grid`` pixels).  ``n_pairs`` different colours are
drawn from :data:`PALETTE` for each image, and each of them appears on exactly two cells,
placed at random distinct positions:

* a **question** cell: a dot of that colour (the cell's centre pixel, :data:`QUESTION`);
* an **answer** cell: one of the 3x3 :data:`PATTERNS` (plus, cross, ring, bars) in that colour.

The target of a question cell is the pattern index of the answer cell *of the same colour*;
every other cell has the target :data:`IGNORE` (-100, the default ``ignore_index`` of
:class:`~npattention.losses.CrossEntropyLoss`).  The answer can be anywhere on the board, so a
network that sees only a small neighbourhood of each cell is near chance (``1 / n_values``), while
self-attention can solve it by a **query-dependent** lookup: the query of a question cell
encodes its colour, the key of an answer cell encodes its colour, and the score ``q_i . k_j``
is largest at the partner -- a different key for every question.  (The question is a bare dot,
not a pattern, so that it is easy to tell apart from an answer of its own colour: otherwise
"find my colour" would score the question's own cell as high as its partner.)

Cell ``(row, col)`` has the flat index ``i = grid * row + col``, the order of the ``N = H*W``
tokens in :class:`~npattention.vision.sagan.SelfAttention2d`.  Everything is drawn from a
seeded :class:`npattention.backend.Generator` (same images on NumPy and CuPy).
"""
from ..backend import DEFAULT_DTYPE, Generator, xp
from ..validate import check_positive_int

__all__ = ["PALETTE", "COLOUR_NAMES", "PATTERNS", "PATTERN_NAMES", "QUESTION", "IGNORE", "make_colour_pairs"]

#: the colours (RGB in [0, 1]); an image uses ``n_pairs`` different ones
PALETTE = ((1.0, 0.15, 0.15), (0.15, 1.0, 0.15), (0.2, 0.4, 1.0), (1.0, 0.9, 0.1), (1.0, 0.2, 1.0), (0.1, 0.95, 1.0))
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
#: the answer patterns (3x3 masks), in value order
PATTERNS = (
    ((0, 1, 0), (1, 1, 1), (0, 1, 0)),   # plus
    ((1, 0, 1), (0, 1, 0), (1, 0, 1)),   # cross
    ((1, 1, 1), (1, 0, 1), (1, 1, 1)),   # ring
    ((1, 1, 1), (0, 0, 0), (1, 1, 1)),   # bars
)
PATTERN_NAMES = ("plus", "cross", "ring", "bars")
#: the question marker: the centre pixel only (it carries its colour and little else)
QUESTION = ((0, 0, 0), (0, 1, 0), (0, 0, 0))
#: target of every cell that is not a question cell
IGNORE = -100


def make_colour_pairs(n, grid=8, n_pairs=3, n_values=4, noise=0.05, seed=0):
    """``n`` boards of colour pairs, the per-cell targets and each question's partner.

    Parameters
    ----------
    n : number of images.
    grid : cells per side (the image is ``3 * grid`` pixels square); at least 2.
    n_pairs : colours per image, each on one question and one answer cell (1..6, and
        ``2 * n_pairs <= grid * grid``).
    n_values : use the first ``n_values`` patterns of :data:`PATTERNS` (2..4); chance level
        on the question cells is ``1 / n_values``.
    noise : standard deviation of the Gaussian pixel noise.
    seed : everything is drawn from ``Generator(seed)``.

    Returns
    -------
    images : ``(n, 3, 3 * grid, 3 * grid)`` float32 ``xp`` array (RGB, values around [0, 1]).
    targets : ``(n, grid, grid)`` int64: at a question cell the pattern index (in
        ``[0, n_values)``) of the same-coloured answer cell, :data:`IGNORE` elsewhere.
    partners : ``(n, grid, grid)`` int64: at a question cell the flat index
        ``grid * row + col`` of its answer cell, -1 elsewhere.
    """
    where = "make_colour_pairs"
    check_positive_int(n, "n", where)
    check_positive_int(grid, "grid", where)
    if grid < 2:
        raise ValueError(f"{where}: 'grid' must be at least 2 cells, got {grid}")
    if not (isinstance(n_pairs, int) and 1 <= n_pairs <= len(PALETTE) and 2 * n_pairs <= grid * grid):
        raise ValueError(f"{where}: 'n_pairs' must be an int in [1, {min(len(PALETTE), grid * grid // 2)}] "
                         f"(one colour of PALETTE per pair, two cells per pair), got {n_pairs!r}")
    if not (isinstance(n_values, int) and 2 <= n_values <= len(PATTERNS)):
        raise ValueError(f"{where}: 'n_values' must be an int in [2, {len(PATTERNS)}], got {n_values!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"{where}: 'noise' must be a non-negative float, got {noise!r}")
    rng = Generator(seed)
    N, P = grid * grid, n_pairs
    cells = xp.argsort(rng.random((n, N)), axis=1)[:, :2 * P]            # (n, 2P): P questions, then P answers
    colours = xp.argsort(rng.random((n, len(PALETTE))), axis=1)[:, :P]   # (n, P): different colours
    values = rng.integers(0, n_values, size=(n, P))                      # (n, P): the answers' patterns
    level = rng.uniform((n, 2 * P), 0.7, 1.0)                            # brightness of each marker

    # per marker: its RGB colour and its 3x3 mask (questions a dot, answers their pattern)
    rgb = xp.asarray(PALETTE, dtype=DEFAULT_DTYPE)[xp.concatenate([colours, colours], axis=1)]  # (n, 2P, 3)
    rgb = rgb * level[..., None]
    patterns = xp.asarray(PATTERNS, dtype=DEFAULT_DTYPE).reshape(len(PATTERNS), 9)
    dot = xp.asarray(QUESTION, dtype=DEFAULT_DTYPE).reshape(1, 1, 9)
    masks = xp.concatenate([xp.broadcast_to(dot, (n, P, 9)), patterns[values]], axis=1)  # (n, 2P, 9)

    # scatter the markers onto the board with a one-hot (marker -> cell) matrix, no index assignment
    onehot = (cells[..., None] == xp.arange(N)).astype(DEFAULT_DTYPE)   # (n, 2P, N)
    cell_rgb = onehot.transpose(0, 2, 1) @ rgb                           # (n, N, 3)
    cell_mask = onehot.transpose(0, 2, 1) @ masks                        # (n, N, 9)
    board = cell_rgb[:, :, :, None] * cell_mask[:, :, None, :]           # (n, N, 3, 9)
    board = board.reshape(n, grid, grid, 3, 3, 3).transpose(0, 3, 1, 4, 2, 5)   # (n, RGB, row, a, col, b)
    images = board.reshape(n, 3, 3 * grid, 3 * grid)
    if noise > 0:
        images = images + rng.normal(images.shape, 0.0, noise)
    images = images.astype(DEFAULT_DTYPE)

    # targets and partners at the question cells (the first P markers), IGNORE / -1 elsewhere
    q_onehot = onehot[:, :P].astype(xp.int64)                            # (n, P, N): question k sits at cell i
    targets = (q_onehot * (values[..., None] - IGNORE)).sum(axis=1) + IGNORE      # value there, IGNORE elsewhere
    partners = (q_onehot * (cells[:, P:, None] + 1)).sum(axis=1) - 1               # answer's cell there, -1 elsewhere
    return images, targets.reshape(n, grid, grid), partners.reshape(n, grid, grid)
