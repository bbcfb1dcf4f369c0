"""Recurrent cells and layers with hand-written backpropagation through time (BPTT).

Cells (one time step, PyTorch's equations, gate order and weight names)::

    RNNCell   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    GRUCell   r = s(. )_r, z = s(. )_z, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
              h' = (1 - z) * n + z * h                        gates in rows [r | z | n]
    LSTMCell  i, f, g, o = s(. ), s(. ), tanh(. ), s(. )      gates in rows [i | f | g | o]
              c' = f * c + i * g,  h' = o * tanh(c')

with ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh (G*H,)``
(G = 1, 3, 4) and ``s`` the logistic sigmoid.  Shapes: ``x (B, I)``, ``h, c (B, H)``.

Sequence layers :class:`RNN`, :class:`GRU`, :class:`LSTM` run a cell over a
batch-first sequence ``x (B, T, I)`` and return ``(outputs (B, T, D*H), final state)``
with ``D = 2`` when ``bidirectional`` (the forward and backward outputs concatenated,
final states stacked ``(num_layers * D, B, H)`` like PyTorch's ``h_n``).  ``num_layers``
stacks layers, with ``dropout`` between them in training mode, as in PyTorch.

How a step is split (used by the layers and by the seq2seq decoders):

* ``cell.project(x)``: the input part ``gi = x W_ih^T + b_ih``.  It does not depend on the
  recurrence, so a layer computes it for **all time steps at once** (one matmul) and
  its gradient ``dW_ih`` once at the end of BPTT.
* ``cell.recur(gi, state) -> (new_state, cache)``: the recurrent part of one step, from
  the projected input ``gi`` and the previous ``state`` (a tuple: ``(h,)``, or
  ``(h, c)`` for the LSTM).  ``cell.recur_backward(d_new_state, cache)`` returns
  ``(d_gi, d_state)`` and adds ``dW_hh``, ``db_hh``.
* ``recur`` is the matrix product ``gh = h W_hh^T + b_hh`` followed by
  ``cell.pointwise(gi, gh, state)``, the element-wise rest of the step (gates, new state);
  ``cell.pointwise_backward`` returns ``(d_gi, d_gh, d_skip)`` without touching ``W_hh``.
  A layer calls these two itself: it runs ``gh`` with a transposed copy of ``W_hh``
  made once per sequence, and adds ``dW_hh`` once after the loop, as ONE matrix product
  over all ``B*T`` (batch, step) rows (see :meth:`_RecurrentBase.backward`).

Padding: pass ``lengths (B,)`` (or a padding ``mask (B, T)``, True = padding at the end
of each row).  At a padded step the state is carried through unchanged and the output
is zero, so a padded batch gives exactly the outputs of each sequence run alone, and
the final state is the state after each sequence's own last real step.  The backward
direction of a bidirectional layer therefore starts at each sequence's last real step.
Without ``lengths`` and ``mask`` every step is real and the layer skips that carrying.
docs/seq2seq.md derives every backward and has a "Speed" section; the plain, one-function-per-step
version of every cell and layer is kept in tests/test_rnn_fast_paths.py, which checks this
file against it in float64.
"""
from .backend import get_rng, xp
from .layers import Dropout, sigmoid
from .module import Module, Parameter
from .validate import check_array, check_positive_int, check_probability


# ====================================================================== cells
def _flat_matmul(a, w):
    """``a @ w`` for ``a (..., n)`` and a matrix ``w (n, m)`` as ONE 2-D product over the flattened
    rows: NumPy runs ``(B, T, n) @ (n, m)`` as B separate BLAS calls, about 2x slower here."""
    if a.ndim == 2:  # one step (B, n): already one product
        return a @ w
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(a.shape[:-1] + (w.shape[-1],))


def _rows(a):
    """``(..., D) -> (N, D)``: every (batch, step) pair one row, for the weight gradients."""
    return a if a.ndim == 2 else a.reshape(-1, a.shape[-1])


def _state_grad(dh_hh, d_skip):
    """``d_state`` of the previous state: the gradient through ``W_hh`` (``dh_hh``) plus the direct
    paths ``d_skip`` (``(dh or None, )``, ``(None, dc)`` for the LSTM) of :meth:`pointwise_backward`."""
    dh = dh_hh if d_skip[0] is None else dh_hh + d_skip[0]
    return (dh,) + tuple(d_skip[1:])


class _CellBase(Module):
    """Parameters and the input/hidden projections shared by the three cells.

    cache (of :meth:`step`, also kept by ``forward``): ``(x, recur_cache)``, the raw input and the recurrent
    part's cache (every cell's ``recur_cache`` starts with the previous ``h``).
    """

    gradcheck_exempt = "abstract base of RNNCell, GRUCell and LSTMCell (each is registered)"
    gates = 1  # G: how many gate blocks of H rows the weights hold
    n_state = 1  # 1: state = (h,); 2: state = (h, c)

    def __init__(self, input_size, hidden_size, bias=True):
        name = type(self).__name__
        self.input_size = check_positive_int(input_size, "input_size", name)
        self.hidden_size = check_positive_int(hidden_size, "hidden_size", name)
        G, H = self.gates, hidden_size
        bound = 1.0 / H ** 0.5  # PyTorch: every weight and bias from U(-1/sqrt(H), 1/sqrt(H))
        rng = get_rng()
        self.weight_ih = Parameter(rng.uniform((G * H, input_size), -bound, bound))
        self.weight_hh = Parameter(rng.uniform((G * H, H), -bound, bound))
        self.bias_ih = Parameter(rng.uniform((G * H,), -bound, bound)) if bias else None
        self.bias_hh = Parameter(rng.uniform((G * H,), -bound, bound)) if bias else None

    # ---------------------------------------------------------------- projections
    def project(self, x):
        """``x W_ih^T + b_ih`` for ``x (..., I)`` -> ``(..., G*H)`` (any leading axes)."""
        gi = _flat_matmul(x, self.weight_ih.data.T)
        if self.bias_ih is not None:
            gi += self.bias_ih.data  # in place: no second (B, T, G*H) array
        return gi

    def project_backward(self, d_gi, x):
        """Add ``dW_ih``, ``db_ih``; return ``dx`` (leading axes flattened for the sums)."""
        self.weight_ih.grad += _rows(d_gi).T @ _rows(x)
        if self.bias_ih is not None:
            self.bias_ih.grad += _rows(d_gi).sum(axis=0)
        return _flat_matmul(d_gi, self.weight_ih.data)

    def hh(self, h, weight_hh_t=None):
        """``gh = h W_hh^T + b_hh (B, G*H)``; ``weight_hh_t``: a contiguous copy of ``W_hh^T`` to use
        instead (a layer makes one per sequence: the plain product runs ~25% faster than with
        the transposed view)."""
        gh = h @ (self.weight_hh.data.T if weight_hh_t is None else weight_hh_t)
        if self.bias_hh is not None:
            gh += self.bias_hh.data
        return gh

    def hh_weight_backward(self, d_gh, h):
        """Add ``dW_hh += d_gh^T h`` and ``db_hh`` for rows ``d_gh (N, G*H)``, ``h (N, H)`` (one step's
        batch, or every (batch, step) pair of a sequence at once)."""
        self.weight_hh.grad += d_gh.T @ h
        if self.bias_hh is not None:
            self.bias_hh.grad += d_gh.sum(axis=0)

    def initial_state(self, batch, dtype):
        return tuple(xp.zeros((batch, self.hidden_size), dtype=dtype) for _ in range(self.n_state))

    # ---------------------------------------------------------------- the recurrent part of a step
    def recur(self, gi, state):
        """``(new_state, cache)`` from the projected input ``gi (B, G*H)`` and ``state``."""
        return self.pointwise(gi, self.hh(state[0]), state)

    def recur_backward(self, d_new, cache):
        """``(d_gi, d_state)`` of :meth:`recur`; adds ``dW_hh``, ``db_hh``."""
        d_gi, d_gh, d_skip = self.pointwise_backward(d_new, cache)
        h = cache[0]
        self.hh_weight_backward(d_gh, h)  # forward was: gh = h W_hh^T + b_hh
        return d_gi, _state_grad(d_gh @ self.weight_hh.data, d_skip)

    # ---------------------------------------------------------------- one full step
    def step(self, x, state):
        """``(new_state, cache)`` for one step from the raw input ``x (B, I)``."""
        new, cache = self.recur(self.project(x), state)
        return new, (x, cache)

    def step_backward(self, d_new, cache):
        """``(dx, d_state)`` for one step (adds every parameter gradient)."""
        x, rcache = cache
        d_gi, d_state = self.recur_backward(d_new, rcache)
        return self.project_backward(d_gi, x), d_state

    def _check_inputs(self, x, states):
        name = type(self).__name__
        dims = {}
        check_array(x, "x", name, shape=("B", self.input_size), dims=dims)
        for label, s in states:
            if s is not None:
                check_array(s, label, name, shape=("B", self.hidden_size), dims=dims)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(_CellBase):
    """Elman cell ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or ReLU).

    ``forward(x (B, I), h (B, H) = zeros) -> h' (B, H)``.
    cache: ``(x, recur_cache)`` from :meth:`step`.
    """

    gates = 1

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh"):
        super().__init__(input_size, hidden_size, bias)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: 'nonlinearity' must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def pointwise(self, gi, gh, state):
        (h,) = state
        a = gi + gh
        h_new = xp.tanh(a, out=a) if self.nonlinearity == "tanh" else xp.maximum(a, 0, out=a)  # in place: a is ours
        return (h_new,), (h, h_new)

    def pointwise_backward(self, d_new, cache):
        (dh_new,) = d_new
        h, h_new = cache
        if self.nonlinearity == "tanh":
            da = dh_new * (1 - h_new * h_new)  # tanh' = 1 - tanh^2
        else:
            da = dh_new * (h_new > 0)
        # a = gi + gh: the same gradient flows to both projections; h reaches h' only through W_hh
        return da, da, (None,)

    def forward(self, x, h=None):
        self._check_inputs(x, [("h", h)])
        self._given = h is not None
        state = (h,) if h is not None else self.initial_state(x.shape[0], x.dtype)
        (h_new,), self.cache = self.step(x, state)
        return h_new

    def backward(self, grad_output):
        dx, (dh,) = self.step_backward((grad_output,), self.cache)
        return (dx, dh) if self._given else dx


class GRUCell(_CellBase):
    """Gated recurrent unit (PyTorch's variant: the reset gate multiplies ``W_hn h + b_hn``).

    .. math::
        r = \\sigma(a_r),\\; z = \\sigma(a_z),\\;
        n = \\tanh(x W_{in}^T + b_{in} + r \\odot (h W_{hn}^T + b_{hn})),\\;
        h' = (1 - z) \\odot n + z \\odot h

    ``forward(x (B, I), h (B, H) = zeros) -> h' (B, H)``.
    cache: ``(x, recur_cache)`` from :meth:`step`.
    """

    gates = 3

    def pointwise(self, gi, gh, state):
        (h,) = state
        H = self.hidden_size
        rz = gi[:, :2 * H] + gh[:, :2 * H]
        sigmoid(rz, precise=False, out=rz)  # r and z: one call on the (B, 2H) block, not two, in place
        r, z = rz[:, :H], rz[:, H:]
        gh_n = gh[:, 2 * H:]
        n = xp.tanh(gi[:, 2 * H:] + r * gh_n)
        h_new = n + z * (h - n)  # = (1 - z) n + z h, one operation fewer
        return (h_new,), (h, rz, n, gh_n)

    def pointwise_backward(self, d_new, cache):
        (dh_new,) = d_new
        h, rz, n, gh_n = cache
        H = self.hidden_size
        r, z = rz[:, :H], rz[:, H:]
        da_n = dh_new * (1 - z) * (1 - n * n)  # through n, then tanh
        # dr = da_n gh_n (n = tanh(. + r gh_n)), dz = dh' (h - n) (h' = n + z (h - n)); then
        # sigmoid' = s (1 - s) for r and z at once, on the (B, 2H) block
        d_rz = xp.concatenate([da_n * gh_n, dh_new * (h - n)], axis=1)
        d_rz *= rz * (1 - rz)
        d_gi = xp.concatenate([d_rz, da_n], axis=1)
        d_gh = xp.concatenate([d_rz, da_n * r], axis=1)  # r scales only the hidden part of n
        return d_gi, d_gh, (dh_new * z,)  # the direct path h -> h'

    forward = RNNCell.forward
    backward = RNNCell.backward


class LSTMCell(_CellBase):
    """Long short-term memory cell (gate rows ``[i | f | g | o]`` as in PyTorch).

    .. math::
        i, f, o = \\sigma(a_i), \\sigma(a_f), \\sigma(a_o),\\; g = \\tanh(a_g),\\;
        c' = f \\odot c + i \\odot g,\\; h' = o \\odot \\tanh(c')

    ``forward(x (B, I), h = zeros, c = zeros) -> (h', c')``; ``backward(grad_h, grad_c=None)``
    returns ``dx`` (and ``dh, dc`` when ``h, c`` were given).
    cache: ``(x, recur_cache)`` from :meth:`step`.
    """

    gates = 4
    n_state = 2

    def pointwise(self, gi, gh, state):
        h, c = state
        H = self.hidden_size
        a = gi + gh
        g = xp.tanh(a[:, 2 * H:3 * H])
        # i, f, o: ONE sigmoid over the whole (B, 4H) block, in place (g's block is left unused), instead of
        # three calls on slices with their own temporaries; precise=False: the tanh form, 3x faster
        gates = sigmoid(a, precise=False, out=a)
        i, f, o = gates[:, :H], gates[:, H:2 * H], gates[:, 3 * H:]
        c_new = f * c + i * g
        tc = xp.tanh(c_new)
        h_new = o * tc
        return (h_new, c_new), (h, c, gates, g, tc)

    def pointwise_backward(self, d_new, cache):
        dh_new, dc_new = d_new
        h, c, gates, g, tc = cache
        H = self.hidden_size
        i, f, o = gates[:, :H], gates[:, H:2 * H], gates[:, 3 * H:]
        dc = dc_new + dh_new * o * (1 - tc * tc)  # c' reaches the loss directly and through h'
        da = xp.concatenate([dc * g, dc * c, dc * i, dh_new * tc], axis=1)  # d i, d f, d g, d o (c' = f c + i g)
        deriv = 1 - gates
        deriv *= gates  # sigmoid' = s (1 - s) for i, f, o: one call on (B, 4H), in place
        xp.subtract(1, g * g, out=deriv[:, 2 * H:3 * H])  # tanh' = 1 - g^2 for g (its own block)
        da *= deriv  # through the gate non-linearities
        return da, da, (None, dc * f)  # h reaches the step only through W_hh; c also directly

    def forward(self, x, h=None, c=None):
        self._check_inputs(x, [("h", h), ("c", c)])
        if (h is None) != (c is None):
            raise ValueError("LSTMCell: give both 'h' and 'c' or neither, got only one")
        self._given = h is not None
        state = (h, c) if h is not None else self.initial_state(x.shape[0], x.dtype)
        (h_new, c_new), self.cache = self.step(x, state)
        return h_new, c_new

    def backward(self, grad_output, grad_c=None):
        dc_new = xp.zeros_like(grad_output) if grad_c is None else grad_c
        dx, (dh, dc) = self.step_backward((grad_output, dc_new), self.cache)
        return (dx, dh, dc) if self._given else dx


# ====================================================================== layers
def lengths_from(lengths, mask, B, T, where, name="lengths"):
    """Validate ``lengths (B,)`` ints in ``[1, T]`` (or derive them from a padding mask);
    ``name``: the caller's name for the lengths argument (e.g. ``"src_lengths"``)."""
    if lengths is not None and mask is not None:
        raise ValueError(f"{where}: give {name!r} or 'mask', not both")
    if mask is not None:
        check_array(mask, "mask", where, shape=(B, T), dtype="bool")
        lengths = (~mask).sum(axis=1)
        if bool(xp.any(mask != (xp.arange(T)[None, :] >= lengths[:, None]))):
            raise ValueError(f"{where}: 'mask' must mark padding at the END of each row (True = padding)")
    if lengths is None:
        return xp.full((B,), T, dtype=xp.int64)
    check_array(lengths, name, where, shape=(B,), dtype="int")
    if bool(xp.any((lengths < 1) | (lengths > T))):  # one read-back, not two
        raise ValueError(f"{where}: {name!r} must lie in [1, T={T}], got min {int(lengths.min())}, "
                         f"max {int(lengths.max())}")
    return lengths


class _RecurrentBase(Module):
    """Cells run over time with BPTT, ``num_layers`` deep, one or two directions.

    As in PyTorch: layer ``l > 0`` reads the (concatenated) outputs of layer ``l - 1``,
    with ``dropout`` applied to them in training mode (never after the last layer);
    initial and final states are ``(num_layers * D, B, H)`` with row ``l * D + d`` for
    layer ``l``, direction ``d``; the cells are ``cells[l * D + d]`` (their parameter names
    ``cells.<l*D+d>.weight_ih`` play the role of PyTorch's ``weight_ih_l<l>[_reverse]``).
    cache: ``(x, real, caches, given)``: the input, the real-step mask (``None`` without padding), every step's
    cell cache per direction and which initial states were given.
    """

    gradcheck_exempt = "abstract base of RNN, GRU and LSTM (each is registered)"
    cell_class = None

    def __init__(self, input_size, hidden_size, bias=True, batch_first=True, bidirectional=False,
                 num_layers=1, dropout=0.0, **cell_kw):
        name = type(self).__name__
        if batch_first is not True:
            raise ValueError(f"{name}: npattention is batch-first, (B, T, I); got batch_first={batch_first!r}")
        if not isinstance(bidirectional, bool):
            raise TypeError(f"{name}: 'bidirectional' must be a bool, got {bidirectional!r}")
        self.input_size = check_positive_int(input_size, "input_size", name)
        self.hidden_size = check_positive_int(hidden_size, "hidden_size", name)
        self.num_layers = check_positive_int(num_layers, "num_layers", name)
        self.dropout = check_probability(dropout, "dropout", name)
        self.bidirectional = bidirectional
        self.num_directions = D = 2 if bidirectional else 1
        # cells[l * D]: layer l left to right; cells[l * D + 1] (bidirectional): right to left
        self.cells = [self.cell_class(input_size if i < D else D * hidden_size, hidden_size, bias, **cell_kw)
                      for i in range(num_layers * D)]
        # dropout between layers (PyTorch: on every layer's output except the last one's)
        self.dropouts = [Dropout(self.dropout) for _ in range(num_layers - 1)]

    @property
    def output_size(self):
        return self.num_directions * self.hidden_size

    def _run(self, x, states0, lengths, mask):
        name = type(self).__name__
        dims = {}
        check_array(x, "x", name, shape=("B", "T", self.input_size), dims=dims)
        B, T, _ = x.shape   # (T = 0 is refused by check_array: docs/contract.md, "Empty inputs")
        D, H, L = self.num_directions, self.hidden_size, self.num_layers
        for label, st in states0:
            if st is not None:
                check_array(st, label, name, shape=(L * D, B, H))
        given = [st is not None for _, st in states0]
        if any(given) and not all(given):
            raise ValueError(f"{name}: give all of {[lab for lab, _ in states0]} or none")
        padded = lengths is not None or mask is not None  # else every step is real: nothing to carry
        lengths = lengths_from(lengths, mask, B, T, name)
        real = (xp.arange(T)[None, :] < lengths[:, None])[:, :, None]  # (B, T, 1): True at real steps

        finals, caches, inp = [], [], x
        for layer in range(L):
            outputs, layer_caches = [], []
            for d in range(D):
                cell = self.cells[layer * D + d]
                gi = cell.project(inp)  # (B, T, G*H): input part of every step in one matmul
                # h W_hh^T as a plain product with a contiguous copy: ~25% faster per step than the view
                weight_hh_t = xp.ascontiguousarray(cell.weight_hh.data.T)
                if all(given):
                    state = tuple(st[layer * D + d] for _, st in states0)
                else:
                    state = cell.initial_state(B, x.dtype)
                ys = xp.empty((B, T, H), dtype=x.dtype)  # filled step by step (no list to stack)
                step_caches = [None] * T
                order = range(T) if d == 0 else range(T - 1, -1, -1)
                # The loop over time IS the lesson: step t needs the state of step t-1, so it
                # cannot be vectorised over time (it is vectorised over the batch).
                for t in order:
                    gh = cell.hh(state[0], weight_hh_t)
                    new, step_caches[t] = cell.pointwise(gi[:, t], gh, state)
                    if padded:
                        keep = real[:, t]  # (B, 1): padded rows keep their state and output 0
                        ys[:, t] = xp.where(keep, new[0], 0)
                        new = tuple(xp.where(keep, n, s) for n, s in zip(new, state))
                    else:
                        ys[:, t] = new[0]
                    state = new
                outputs.append(ys)
                finals.append(state)
                layer_caches.append(step_caches)
            caches.append((inp, layer_caches))
            out = outputs[0] if D == 1 else xp.concatenate(outputs, axis=-1)
            inp = self.dropouts[layer](out) if layer < L - 1 else out   # between layers only
        self.cache = (x, real if padded else None, caches, all(given))
        final = tuple(xp.stack([f[k] for f in finals]) for k in range(len(finals[0])))  # each (L*D, B, H)
        return out, final

    def backward(self, grad_output, grad_h_n=None, grad_c_n=None):
        """BPTT.  ``grad_output (B, T, D*H)``; optional ``grad_h_n``/``grad_c_n (L*D, B, H)``
        for the final state.  Returns ``dx`` (plus ``dh0`` [, ``dc0``] when given to forward)."""
        x, real, caches, given = self.cache
        name = type(self).__name__
        B, T, _ = x.shape
        D, H, L = self.num_directions, self.hidden_size, self.num_layers
        n_state = self.cell_class.n_state
        grads_final = [grad_h_n, grad_c_n][:n_state]
        if n_state == 1 and grad_c_n is not None:
            raise ValueError(f"{name}.backward: 'grad_c_n' only exists for the LSTM")
        for label, g in zip(["grad_h_n", "grad_c_n"], grads_final):
            if g is not None:
                check_array(g, label, f"{name}.backward", shape=(L * D, B, H))
        d_states0 = [None] * (L * D)
        d_out = grad_output
        for layer in range(L - 1, -1, -1):   # the layers in reverse
            inp, layer_caches = caches[layer]
            d_inp = 0
            for d in range(D):
                i = layer * D + d
                cell = self.cells[i]
                dy = d_out[..., d * H:(d + 1) * H]
                d_state = tuple(xp.zeros((B, H), dtype=x.dtype) if g is None else g[i] for g in grads_final)
                d_gi = xp.empty((B, T, cell.gates * H), dtype=x.dtype)
                d_gh = xp.empty_like(d_gi) if isinstance(cell, GRUCell) else d_gi  # RNN, LSTM: d_gh = d_gi
                weight_hh = cell.weight_hh.data
                order = range(T - 1, -1, -1) if d == 0 else range(T)  # the forward order, reversed
                for t in order:
                    if real is not None:
                        keep = real[:, t]
                        # state_t = keep ? new : prev  and  y_t = keep ? new_h : 0
                        d_new = [xp.where(keep, ds, 0) for ds in d_state]
                        d_new[0] = d_new[0] + xp.where(keep, dy[:, t], 0)
                    else:
                        d_new = [d_state[0] + dy[:, t], *d_state[1:]]
                    d_gi_t, d_gh_t, d_skip = cell.pointwise_backward(tuple(d_new), layer_caches[d][t])
                    d_gi[:, t] = d_gi_t
                    if d_gh is not d_gi:
                        d_gh[:, t] = d_gh_t
                    d_prev = _state_grad(d_gh_t @ weight_hh, d_skip)  # forward was: gh = h W_hh^T + b_hh
                    d_state = d_prev if real is None else tuple(
                        xp.where(keep, dp, ds) for dp, ds in zip(d_prev, d_state))
                # dW_hh of every step in ONE (G*H, B*T) @ (B*T, H) product instead of T small ones
                h_prev = xp.stack([c[0] for c in layer_caches[d]], axis=1)  # (B, T, H): the h each step read
                cell.hh_weight_backward(_rows(d_gh), _rows(h_prev))
                d_inp = d_inp + cell.project_backward(d_gi, inp)  # dW_ih for all steps at once
                d_states0[i] = d_state
            # inp = dropout(out of the layer below): undo the dropout on the way down
            d_out = self.dropouts[layer - 1].backward(d_inp) if layer > 0 else d_inp
        dx = d_out
        if not given:
            return dx
        return (dx,) + tuple(xp.stack([ds[k] for ds in d_states0]) for k in range(n_state))

    def extra_repr(self):
        extra = f", num_layers={self.num_layers}" if self.num_layers > 1 else ""
        extra += f", dropout={self.dropout}" if self.dropout else ""
        return f"{self.input_size}, {self.hidden_size}, bidirectional={self.bidirectional}{extra}"


class RNN(_RecurrentBase):
    """Elman RNN over a sequence: ``forward(x (B, T, I), h0 (D, B, H) = zeros, lengths=None,
    mask=None) -> (outputs (B, T, D*H), h_n (D, B, H))``.
    cache: ``(x, real, caches, given)`` (see the module docstring: each step's cell cache).
    """

    cell_class = RNNCell

    def __init__(self, input_size, hidden_size, bias=True, batch_first=True, bidirectional=False,
                 nonlinearity="tanh", num_layers=1, dropout=0.0):
        super().__init__(input_size, hidden_size, bias, batch_first, bidirectional, num_layers, dropout,
                         nonlinearity=nonlinearity)

    def forward(self, x, h0=None, lengths=None, mask=None):
        out, (h_n,) = self._run(x, [("h0", h0)], lengths, mask)
        return out, h_n


class GRU(_RecurrentBase):
    """GRU over a sequence: ``forward(x (B, T, I), h0 (D, B, H) = zeros, lengths=None,
    mask=None) -> (outputs (B, T, D*H), h_n (D, B, H))``.
    cache: ``(x, real, caches, given)`` (each step's cell cache, per direction).
    """

    cell_class = GRUCell
    forward = RNN.forward


class LSTM(_RecurrentBase):
    """LSTM over a sequence: ``forward(x (B, T, I), h0 = zeros, c0 = zeros, lengths=None,
    mask=None) -> (outputs (B, T, D*H), (h_n, c_n))`` with ``h_n, c_n (D, B, H)``.
    cache: ``(x, real, caches, given)`` (each step's cell cache, per direction).
    """

    cell_class = LSTMCell

    def forward(self, x, h0=None, c0=None, lengths=None, mask=None):
        out, (h_n, c_n) = self._run(x, [("h0", h0), ("c0", c0)], lengths, mask)
        return out, (h_n, c_n)
