"""Small sequence models for the "why self-attention" comparison and the three task types.

Class notes 001 and 002 argue for self-attention against three older ways of reading a
sequence; each is one encoder here, all mapping token vectors ``(B, T, E)`` to features
``(B, T, H)`` so that the same read-outs sit on top of any of them:

=====================  ==================================================================
encoder                what position ``t`` can see after the encoder
=====================  ==================================================================
``"self_attention"``   every position, in one step (a Transformer encoder layer)
``"lstm"``             every earlier position, through ``t - j`` recurrent steps
``"cnn"``              ``layers * (kernel - 1) / 2`` positions either side (:class:`ConvStack`)
``"window_fc"``        ``context`` positions either side (:class:`WindowFC`, the notes'
                       window-based fully connected tagger)
=====================  ==================================================================

Read-outs (the three task types of note 002):

* ``"all"``   -- one label per vector (sequence labelling, e.g. part-of-speech tags): ``(B, T, K)``;
* ``"last"``  -- one label per sequence, read at the last position: ``(B, K)``;
* ``"pool"``  -- one label per sequence, from :class:`AttentionPooling`: ``(B, K)``.

(The third task type, sequence to sequence, uses :class:`npattention.transformer.Transformer`.)
"""
from .backend import DEFAULT_DTYPE, xp
from .layers import Embedding, Linear, ReLU
from .module import Module, Parameter
from .positional import LearnedPositionalEmbedding
from .rnn import LSTM
from .softmax import softmax
from .transformer import TransformerEncoderLayer
from .validate import check_array, check_positive_int
from .vision.layers import Conv1d

__all__ = ["AttentionPooling", "ConvStack", "SequenceClassifier", "WindowFC", "ENCODERS", "READOUTS"]

ENCODERS = ("self_attention", "lstm", "cnn", "window_fc")
READOUTS = ("all", "last", "pool")


class WindowFC(Module):
    """The notes' window-based fully connected layer: each position sees ``context`` neighbours
    on either side, concatenated, through one ``Linear`` + ReLU.

    ``x (B, T, E)`` -> ``(B, T, H)``::

        window[b, t] = [x[b, t - c], ..., x[b, t], ..., x[b, t + c]]     (zeros beyond the ends)
        out[b, t]    = relu(window[b, t] W^T + b)                         W: (H, (2c + 1) E)

    It cannot see beyond ``c`` positions, and its weight size is tied to the window: a fully
    connected layer over the *whole* sequence would need a fixed length (note 002's point).
    Backward: the Linear and ReLU backwards, then each window slot's gradient is added back to
    the position it was copied from (the adjoint of the copy, as ``col2im``).
    cache: ``(T, E)`` (the Linear and ReLU keep their own).
    """

    def __init__(self, in_features, out_features, context=2):
        where = "WindowFC"
        self.in_features = check_positive_int(in_features, "in_features", where)
        self.out_features = check_positive_int(out_features, "out_features", where)
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise ValueError(f"{where}: 'context' must be an int >= 0, got {context!r}")
        self.context = context
        self.fc = Linear((2 * context + 1) * in_features, out_features)
        self.relu = ReLU()

    def forward(self, x):
        check_array(x, "x", "WindowFC", shape=(None, None, self.in_features))
        B, T, E = x.shape
        c = self.context
        xpad = xp.pad(x, ((0, 0), (c, c), (0, 0)))
        # slot s of the window of position t holds x[t + s - c]: one slice per slot, not per position
        window = xp.concatenate([xpad[:, s:s + T] for s in range(2 * c + 1)], axis=-1)   # (B, T, (2c+1) E)
        self.cache = (T, E)
        return self.relu(self.fc(window))

    def backward(self, grad_output):
        T, E = self.cache
        c = self.context
        dwindow = self.fc.backward(self.relu.backward(grad_output))         # (B, T, (2c+1) E)
        dxpad = xp.zeros((grad_output.shape[0], T + 2 * c, E), dtype=dwindow.dtype)
        for s in range(2 * c + 1):                                           # undo each slot's slice
            dxpad[:, s:s + T] += dwindow[..., s * E:(s + 1) * E]
        return dxpad[:, c:c + T]

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, context={self.context}"


class ConvStack(Module):
    """``layers`` 1-D convolutions (kernel ``kernel``, "same" padding) with ReLU, on ``(B, T, E)``.

    ``x (B, T, E)`` -> ``(B, T, H)``.  Each layer widens what a position sees by ``kernel - 1``
    positions (half on each side): the receptive field is ``1 + layers (kernel - 1)``.
    A local n-gram encoder in the notes' words.  ``kernel`` must be odd.
    cache: only a flag that forward ran; the layers keep their own caches.
    """

    def __init__(self, in_features, out_features, kernel=3, layers=2):
        where = "ConvStack"
        check_positive_int(in_features, "in_features", where)
        check_positive_int(out_features, "out_features", where)
        self.kernel = check_positive_int(kernel, "kernel", where)
        if kernel % 2 == 0:
            raise ValueError(f"{where}: 'kernel' must be odd (same padding), got {kernel}")
        self.num_layers = check_positive_int(layers, "layers", where)
        self.convs = [Conv1d(in_features if i == 0 else out_features, out_features, kernel, padding=kernel // 2)
                      for i in range(layers)]
        self.relus = [ReLU() for _ in range(layers)]

    @property
    def receptive_field(self):
        return 1 + self.num_layers * (self.kernel - 1)

    def forward(self, x):
        check_array(x, "x", "ConvStack", shape=(None, None, self.convs[0].in_channels))
        h = xp.swapaxes(x, 1, 2)                                  # (B, E, T): channels first for Conv1d
        for conv, relu in zip(self.convs, self.relus):
            h = relu(conv(h))
        self.cache = True
        return xp.swapaxes(h, 1, 2)

    def backward(self, grad_output):
        g = xp.swapaxes(grad_output, 1, 2)
        for conv, relu in zip(reversed(self.convs), reversed(self.relus)):
            g = conv.backward(relu.backward(g))
        return xp.swapaxes(g, 1, 2)

    def extra_repr(self):
        return f"kernel={self.kernel}, layers={self.num_layers}, receptive_field={self.receptive_field}"


class AttentionPooling(Module):
    """One vector per sequence by attention: a learned query scores every position.

    ``x (B, T, E)``, optional ``mask (B, T)`` (True = padding) -> ``(B, E)``::

        1. score:   s_t = x_t . w / sqrt(E)          (B, T)      w: (E,), a learned query
        2. align:   a   = softmax(s, mask)            (B, T)
        3. context: c   = sum_t a_t x_t               (B, E)

    Backward: ``dx_t = a_t dc + ds_t w / sqrt(E)`` with ``ds = a (da - sum_t a_t da_t)`` and
    ``da_t = dc . x_t``; ``dw = sum_{b,t} ds_{b,t} x_{b,t} / sqrt(E)``.  ``last_weights`` keeps
    ``a`` for plots.  cache: ``(x, a)``.
    """

    def __init__(self, embed_dim):
        self.embed_dim = check_positive_int(embed_dim, "embed_dim", "AttentionPooling")
        self.query = Parameter(xp.zeros((embed_dim,), dtype=DEFAULT_DTYPE))   # uniform weights at the start
        self.last_weights = None

    def forward(self, x, mask=None):
        check_array(x, "x", "AttentionPooling", shape=("B", "T", self.embed_dim))
        if mask is not None:
            check_array(mask, "mask", "AttentionPooling", shape=x.shape[:2], dtype="bool")
        scale = self.embed_dim ** -0.5
        scores = (x @ self.query.data) * scale                   # 1. score  (B, T)
        a = softmax(scores, axis=-1, mask=mask)                  # 2. align
        self.last_weights = a
        self.cache = (x, a)
        return xp.einsum("bt,bte->be", a, x)                     # 3. context

    def backward(self, grad_output):
        x, a = self.cache
        scale = self.embed_dim ** -0.5
        da = xp.einsum("be,bte->bt", grad_output, x)             # c = sum_t a_t x_t
        ds = a * (da - (a * da).sum(axis=-1, keepdims=True))     # softmax backward (masked: a = 0)
        self.query.grad += xp.einsum("bt,bte->e", ds, x) * scale  # s = x w scale
        return a[..., None] * grad_output[:, None, :] + ds[..., None] * (self.query.data * scale)

    def extra_repr(self):
        return f"{self.embed_dim}"


class SequenceClassifier(Module):
    """Token ids ``(B, T)`` -> logits: embedding, one encoder, a read-out, a Linear.

    ``encoder``: one of :data:`ENCODERS`; ``readout``: ``"all"`` (``(B, T, K)``, one label per
    token), ``"last"`` (``(B, K)`` at position ``T - 1``) or ``"pool"`` (``(B, K)`` through
    :class:`AttentionPooling`).  ``d_model``: embedding width ``E``; ``hidden``: encoder width
    (the LSTM's hidden size, the CNN's channels, the window FC's units; ignored for
    self-attention, whose width is ``d_model``).  Self-attention adds learned position
    embeddings (``max_len``) -- without them it could not tell "3 back" from "5 back".
    ``encoder_options`` go to the encoder (``kernel``/``layers`` for the CNN, ``context`` for
    the window FC, ``nhead``/``dim_feedforward`` for self-attention).
    cache: ``(h.shape, T)``, to spread the read-out's gradient back over the positions.
    """

    def __init__(self, vocab_size, num_classes, encoder="self_attention", readout="last", d_model=16, hidden=16,
                 max_len=64, **encoder_options):
        where = "SequenceClassifier"
        if encoder not in ENCODERS:
            raise ValueError(f"{where}: 'encoder' must be one of {ENCODERS}, got {encoder!r}")
        if readout not in READOUTS:
            raise ValueError(f"{where}: 'readout' must be one of {READOUTS}, got {readout!r}")
        self.encoder_name, self.readout = encoder, readout
        self.embed = Embedding(vocab_size, d_model)
        self.pos = None
        if encoder == "self_attention":
            self.pos = LearnedPositionalEmbedding(max_len, d_model, init_std=0.5)
            nhead = encoder_options.pop("nhead", 1)
            ff = encoder_options.pop("dim_feedforward", 2 * d_model)
            self.encoder = TransformerEncoderLayer(d_model, nhead, dim_feedforward=ff, dropout=0.0, **encoder_options)
            width = d_model
        elif encoder == "lstm":
            self.encoder = LSTM(d_model, hidden, **encoder_options)
            width = hidden
        elif encoder == "cnn":
            self.encoder = ConvStack(d_model, hidden, **encoder_options)
            width = hidden
        else:
            self.encoder = WindowFC(d_model, hidden, **encoder_options)
            width = hidden
        self.pool = AttentionPooling(width) if readout == "pool" else None
        self.head = Linear(width, num_classes)

    def forward(self, ids, mask=None):
        h = self.embed(ids)
        if self.pos is not None:
            h = self.pos(h)
        if self.encoder_name == "self_attention":
            h = self.encoder(h, src_key_padding_mask=mask)
        elif self.encoder_name == "lstm":
            h, _ = self.encoder(h)
        else:
            h = self.encoder(h)
        T = h.shape[1]
        self.cache = (h.shape, T)
        if self.readout == "last":
            h = h[:, -1]
        elif self.readout == "pool":
            h = self.pool(h, mask)
        return self.head(h)

    def backward(self, grad_output):
        shape, T = self.cache
        g = self.head.backward(grad_output)
        if self.readout == "last":
            g_full = xp.zeros(shape, dtype=g.dtype)
            g_full[:, -1] = g                                          # only the last position was read
            g = g_full
        elif self.readout == "pool":
            g = self.pool.backward(g)
        g = self.encoder.backward(g)
        if self.pos is not None:
            g = self.pos.backward(g)
        self.embed.backward(g)                                         # ids: no input gradient

    def extra_repr(self):
        return f"encoder={self.encoder_name!r}, readout={self.readout!r}"
