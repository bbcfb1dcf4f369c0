"""RNN encoder-decoder (seq2seq) with attention in the decoder.

An :class:`Encoder` (embedding + GRU/LSTM, optionally bidirectional) reads the source; a decoder writes the
target one token at a time and at every step attends over the encoder outputs with the score -> align ->
context pieces of :mod:`npattention.attention`: :class:`BahdanauDecoder` (additive score, before the RNN
step), :class:`LuongDecoder` (dot / general / additive, after it), :class:`LocationDecoder` (one score per
source position) and :class:`PlainDecoder` (no attention, the baseline).  :class:`Seq2Seq` joins encoder and
decoder.  docs/seq2seq.md has the equations, every backward, and the decoder step API (:meth:`_Decoder.step`).
"""
from types import SimpleNamespace

from .attention.align import SoftmaxAlign
from .attention.attention import LocationAttention
from .attention.context import Context
from .attention.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from .backend import xp
from .masks import padding_mask
from .layers import Embedding, Linear, Tanh
from .module import Module
from .rnn import GRU, LSTM, GRUCell, LSTMCell, lengths_from
from .validate import check_array, check_positive_int

CELLS = {"gru": (GRU, GRUCell), "lstm": (LSTM, LSTMCell)}


def _cell_kind(cell, where):
    if cell not in CELLS:
        raise ValueError(f"{where}: 'cell' must be 'gru' or 'lstm', got {cell!r}")
    return cell


# A Module keeps ONE cache, its last forward's, and checks its arguments at every call.  A decoder
# runs the same pieces (score, align, context, ...) at every time step, on inputs it checked once
# per sequence (forward, start), so a step calls each piece's UNCHECKED ``step`` -> ``(out, cache)``
# and keeps the cache itself, CS231n style; ``step_backward(grad, cache)`` undoes that call.  Every
# score, SoftmaxAlign and Context has the pair (npattention.attention.scores, "Checked and unchecked
# calls"); a module without it (LocationAttention, a score module of your own) is called checked and
# its cache taken out.  docs/seq2seq.md, "Speed", has the numbers.
def _forward(piece, *inputs, **kwargs):
    """``(output, cache)`` of one call of a piece (unchecked when it has ``step``)."""
    if hasattr(piece, "step"):
        return piece.step(*inputs, **kwargs)
    out = piece(*inputs, **kwargs)
    return out, piece.cache


def _backward(piece, grad, cache):
    """The backward of the call that returned ``cache``."""
    if hasattr(piece, "step_backward"):
        return piece.step_backward(grad, cache)
    piece.cache = cache
    return piece.backward(grad)


def _check_score_sizes(score, query_dim, key_dim, where):
    """A score module given to a decoder runs unchecked at every step (see ``_forward``): check here,
    once, that it takes queries of size ``query_dim`` (hidden_size) and keys of size ``key_dim`` (enc_dim)."""
    name = type(score).__name__
    if isinstance(score, (DotScore, ScaledDotScore, CosineScore)) and query_dim != key_dim:
        raise ValueError(f"{where}: {name} compares queries and keys of one size: it needs hidden_size == "
                         f"enc_dim, got {query_dim} and {key_dim}")
    got = (getattr(score, "query_dim", query_dim), getattr(score, "key_dim", key_dim))
    if got != (query_dim, key_dim):
        raise ValueError(f"{where}: the score module {name} must have query_dim = hidden_size = {query_dim} and "
                         f"key_dim = enc_dim = {key_dim}, got query_dim={got[0]}, key_dim={got[1]}")


def select_rows(tree, index):
    """Rows ``index`` of every array in a decoder ``memory`` dict or ``state`` tuple.

    Beam search keeps, reorders or repeats hypotheses with it, e.g. ``select_rows(state, backpointers)``
    or ``select_rows(memory, xp.repeat(xp.arange(B), beam))``.
    """
    if isinstance(tree, dict):
        return {k: None if v is None else v[index] for k, v in tree.items()}
    return tuple(v[index] for v in tree)


# ====================================================================== encoder
class Encoder(Module):
    """``Embedding`` + ``GRU``/``LSTM`` over the source, and the bridge to the decoder.

    ``forward(src (B, S) int, lengths (B,) = None) -> (enc_out (B, S, D*H), state)`` with
    ``state = (h0,)`` (GRU) or ``(h0, c0)`` (LSTM), each ``(B, H_dec)``: the decoder's
    initial state.  With ``bidirectional`` (or a different decoder size) the final states
    of both directions are joined: ``h0 = tanh(W_h [h_fwd; h_bwd] + b_h)``, and for the
    LSTM ``c0 = W_c [c_fwd; c_bwd] + b_c``; otherwise ``h0`` is the last state itself.
    Padded positions of ``enc_out`` are zero (see :mod:`npattention.rnn`).
    ``backward(d_enc_out, d_state=None)`` returns ``None`` (ids are not differentiable).
    cache: the batch size ``B`` (the embedding, RNN and bridge keep their own caches).
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, cell="gru", bidirectional=False,
                 dec_hidden_size=None, padding_idx=0):
        self.cell = _cell_kind(cell, "Encoder")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size", "Encoder")
        self.dec_hidden_size = hidden_size if dec_hidden_size is None else \
            check_positive_int(dec_hidden_size, "dec_hidden_size", "Encoder")
        self.embedding = Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.rnn = CELLS[cell][0](embed_dim, hidden_size, bidirectional=bidirectional)
        D = self.rnn.num_directions
        self.output_size = D * hidden_size
        self.use_bridge = bidirectional or self.dec_hidden_size != hidden_size
        if self.use_bridge:
            self.bridge_h = Linear(D * hidden_size, self.dec_hidden_size)
            self.bridge_tanh = Tanh()
            if cell == "lstm":
                self.bridge_c = Linear(D * hidden_size, self.dec_hidden_size)

    def forward(self, src, lengths=None):
        check_array(src, "src", "Encoder", shape=("B", "S"), dtype="int")   # (S = 0 is refused there)
        x = self.embedding(src)  # (B, S, E)
        out, final = self.rnn(x, lengths=lengths)
        finals = final if self.cell == "lstm" else (final,)  # each (D, B, H)
        B = src.shape[0]
        joined = [f.transpose(1, 0, 2).reshape(B, self.output_size) for f in finals]  # (B, D*H): [fwd; bwd]
        if not self.use_bridge:
            state = tuple(joined)
        else:
            h0 = self.bridge_tanh(self.bridge_h(joined[0]))
            state = (h0,) if self.cell == "gru" else (h0, self.bridge_c(joined[1]))
        self.cache = B
        return out, state

    def backward(self, grad_output, grad_state=None):
        B = self.cache
        D, H = self.rnn.num_directions, self.hidden_size
        d_joined = [None, None]
        if grad_state is not None:
            if not self.use_bridge:
                d_joined = list(grad_state) + [None]
            else:
                d_joined[0] = self.bridge_h.backward(self.bridge_tanh.backward(grad_state[0]))
                if self.cell == "lstm":
                    d_joined[1] = self.bridge_c.backward(grad_state[1])
        d_final = [None if g is None else g.reshape(B, D, H).transpose(1, 0, 2) for g in d_joined]
        if self.cell == "lstm":
            dx = self.rnn.backward(grad_output, d_final[0], d_final[1])
        else:
            dx = self.rnn.backward(grad_output, d_final[0])
        self.embedding.backward(dx)


# ====================================================================== decoders
class _Decoder(Module):
    """The time loop shared by every decoder: teacher forcing, BPTT and step-by-step decoding.

    ``forward(tgt_in (B, T), enc_out (B, S, E), h0 (B, H), c0=None, src_mask=None)
    -> (logits (B, T, V), weights (B, T, S) or None)``; ``backward(d_logits) -> (d_enc_out, d_h0[, d_c0])``.

    A decoder writes ONE step, forward then backward, on one screen:

    * ``step_forward(emb_t (B, Em), state, memory) -> (features, weights (B, S), new_state, cache)``
      with ``cache`` a tuple of its pieces' caches, and
      ``step_backward(d_features, d_new_state, cache, d_memory) -> (d_emb_t, d_state)``;
    * ``_start`` / ``_start_backward``: what is computed once per sequence (the ``memory`` dict);
    * ``head`` / ``head_backward``: the output layers (``self.out``), run once over all steps in training.

    Decoding one token at a time (greedy here; beam search builds on the same calls)::

        memory, state = decoder.start(enc_out, h0, c0, src_mask)
        logits, state, weights = decoder.step(prev_tokens, state, memory)   # (B, V), ..., (B, S)
        state, memory = select_rows(state, idx), select_rows(memory, idx)  # keep / reorder rows

    ``state`` is ``(h,)`` (GRU) or ``(h, c)`` (LSTM), each ``(B, H)``.
    cache (of forward): ``(memory, step caches, state0, c0 given)``.
    """

    gradcheck_exempt = "abstract base of the decoders (each is registered)"

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, cell="gru", padding_idx=0):
        name = type(self).__name__
        self.cell_kind = _cell_kind(cell, name)
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", name)
        self.embed_dim = check_positive_int(embed_dim, "embed_dim", name)
        self.hidden_size = check_positive_int(hidden_size, "hidden_size", name)
        self.enc_dim = check_positive_int(enc_dim, "enc_dim", name)
        self.embedding = Embedding(vocab_size, embed_dim, padding_idx=padding_idx)

    def _make_cell(self, input_size):
        return CELLS[self.cell_kind][1](input_size, self.hidden_size)

    def _check_source(self, enc_out, h0, c0, src_mask, dims):
        name = type(self).__name__
        check_array(enc_out, "enc_out", name, shape=("B", "S", self.enc_dim), dims=dims)
        check_array(h0, "h0", name, shape=("B", self.hidden_size), dims=dims)
        if c0 is not None:
            if self.cell_kind != "lstm":
                raise ValueError(f"{name}: 'c0' is only used with cell='lstm', this decoder has cell='gru'")
            check_array(c0, "c0", name, shape=("B", self.hidden_size), dims=dims)
        if src_mask is not None:
            check_array(src_mask, "src_mask", name, shape=("B", "S"), dtype="bool", dims=dims)

    # ---------------------------------------------------------------- per sequence
    def _start(self, enc_out, h0, c0, src_mask):
        """``(memory, state0)``; memory holds batch-first arrays (the mask as ``(B, 1, S)``)."""
        state = (h0,) if self.cell_kind == "gru" else (h0, xp.zeros_like(h0) if c0 is None else c0)
        mask = None if src_mask is None else src_mask[:, None, :]  # one query row per step
        return {"enc_out": enc_out, "mask": mask}, state

    def _memory_grads(self, memory):
        """Zero gradients for the memory's float arrays (``step_backward`` adds every step's to them), and
        ``"context_calls"`` (``"score_calls"``): every step's ``(d context, cache)`` of a :class:`Context`
        piece (``(d scores, cache)`` of a score with ``key_backward``), whose ``d enc_out`` (``d keys``)
        ``_start_backward`` then computes for all steps in one product."""
        d_memory = {k: xp.zeros_like(v) for k, v in memory.items() if v is not None and v.dtype.kind == "f"}
        d_memory["context_calls"], d_memory["score_calls"] = [], []  # the score's: Luong dot / general
        return d_memory

    def _start_backward(self, d_memory, memory):
        """``(d_enc_out, extra d_h0 or None)`` from the gradients of the memory's arrays."""
        return d_memory["enc_out"], None

    def start(self, enc_out, h0, c0=None, src_mask=None):
        """Once per source batch, for :meth:`step`: ``(memory, state)``."""
        self._check_source(enc_out, h0, c0, src_mask, {})
        return self._start(enc_out, h0, c0, src_mask)

    # ---------------------------------------------------------------- output layers
    def head(self, features):
        """Output layers: ``features (..., F) -> logits (..., V)``."""
        return self.out(features)

    def head_backward(self, d_logits):
        return self.out.backward(d_logits)

    # ---------------------------------------------------------------- one step, for decoding
    def step(self, prev_tokens, state, memory):
        """One decoding step: ``prev_tokens (B,)`` int (``<sos>`` first) ->
        ``(logits (B, V), new_state, weights (B, S) or None)``.

        For inference: it reuses the layers' caches, so run it after (not between) a forward
        and its backward.
        """
        name, dims = f"{type(self).__name__}.step", {}
        check_array(prev_tokens, "prev_tokens", name, shape=("B",), dtype="int", dims=dims)
        # the pieces run unchecked (memory was checked by start): check what changes from step to step
        for k, s in enumerate(state):
            check_array(s, f"state[{k}]", name, shape=("B", self.hidden_size), dims=dims)
        check_array(memory["enc_out"], "memory['enc_out']", name, shape=("B", "S", self.enc_dim), dims=dims)
        return self._decode_step(prev_tokens, state, memory)

    def _decode_step(self, prev_tokens, state, memory):
        """:meth:`step` without its checks (for :meth:`greedy`, whose tokens and state are its own)."""
        emb_t = self.embedding(prev_tokens[:, None])[:, 0]
        features, weights, new_state, _ = self.step_forward(emb_t, state, memory)
        return self.head(features), new_state, weights

    # ---------------------------------------------------------------- the whole sequence
    def forward(self, tgt_in, enc_out, h0, c0=None, src_mask=None):
        name, dims = type(self).__name__, {}
        check_array(tgt_in, "tgt_in", name, shape=("B", "T"), dtype="int", dims=dims)
        if tgt_in.shape[1] == 0:
            raise ValueError(f"{name}: 'tgt_in' must hold at least one step (T >= 1), got shape {tuple(tgt_in.shape)}")
        self._check_source(enc_out, h0, c0, src_mask, dims)
        emb = self.embedding(tgt_in)  # (B, T, Em): teacher forcing knows every input already
        memory, state = self._start(enc_out, h0, c0, src_mask)
        state0 = state
        features, weights, caches = [], [], []
        # The loop over time IS the lesson: step t needs the state (and, for Bahdanau,
        # the attention) of step t-1.  Each step is vectorised over the batch.
        for t in range(tgt_in.shape[1]):
            f, w, state, cache = self.step_forward(emb[:, t], state, memory)
            features.append(f)
            weights.append(w)
            caches.append(cache)
        logits = self.head(xp.stack(features, axis=1))  # output layers for all steps at once
        self.cache = (memory, caches, state0, c0 is not None)
        attn = None if weights[0] is None else xp.stack(weights, axis=1)  # (B, T, S)
        return logits, attn

    def backward(self, grad_output):
        """BPTT through the whole decoder; returns ``(d_enc_out, d_h0)`` (and ``d_c0`` if given)."""
        memory, caches, state0, c0_given = self.cache
        d_features = self.head_backward(grad_output)  # (B, T, F)
        d_memory = self._memory_grads(memory)
        d_state = tuple(xp.zeros_like(s) for s in state0)
        d_emb = xp.zeros(grad_output.shape[:2] + (self.embed_dim,), dtype=grad_output.dtype)
        for t in range(len(caches) - 1, -1, -1):
            d_emb[:, t], d_state = self.step_backward(d_features[:, t], d_state, caches[t], d_memory)
        self.embedding.backward(d_emb)
        d_enc, d_h0_extra = self._start_backward(d_memory, memory)
        d_h0 = d_state[0] if d_h0_extra is None else d_state[0] + d_h0_extra
        return (d_enc, d_h0, d_state[1]) if c0_given else (d_enc, d_h0)

    def greedy(self, enc_out, h0, c0=None, src_mask=None, max_len=20, sos=1, eos=2):
        """Greedy decoding, vectorised over the batch: feed back the argmax token.

        Returns ``(tokens (B, L), weights (B, L, S) or None)``, ``L <= max_len``; decoding
        stops early once every row has produced ``eos`` (later tokens of a finished row are ``eos``).
        It reuses the layers' caches, so run it after (not between) a forward and its backward.
        """
        check_positive_int(max_len, "max_len", f"{type(self).__name__}.greedy")
        memory, state = self.start(enc_out, h0, c0, src_mask)
        B = enc_out.shape[0]
        y = xp.full((B,), sos, dtype=xp.int64)
        done = xp.zeros((B,), dtype=bool)
        tokens, weights = [], []
        for _ in range(max_len):  # the loop over time: each input is the previous output
            logits, state, w = self._decode_step(y, state, memory)
            y = xp.where(done, eos, xp.argmax(logits, axis=-1))
            done = done | (y == eos)
            tokens.append(y)
            weights.append(w)
            if bool(done.all()):
                break
        attn = None if weights[0] is None else xp.stack(weights, axis=1)
        return xp.stack(tokens, axis=1), attn

    def load_state_dict(self, state, strict=True):
        """As :meth:`Module.load_state_dict`; also reads checkpoints with the old parameter names."""
        return super().load_state_dict(_translate_legacy_state(state, ""), strict)


class _AdditiveNames:
    """Deprecated (kept for one release): the old attribute names of the additive score's parameters,
    ``query_proj.weight`` = ``score.W_q``, ``key_proj.weight`` / ``.bias`` = ``score.W_k`` / ``score.bias``,
    ``v`` = ``score.v``."""

    @property
    def query_proj(self):
        return SimpleNamespace(weight=self.score.W_q, bias=None)

    @property
    def key_proj(self):
        return SimpleNamespace(weight=self.score.W_k, bias=self.score.bias)

    @property
    def v(self):
        return self.score.v


class BahdanauDecoder(_AdditiveNames, _Decoder):
    """Bahdanau et al. (2015): attend with the *previous* state, feed the context into the RNN.

    At step ``t`` with ``s = h_{t-1}`` and encoder outputs ``k_j (B, S, E)``:

    1. score   ``e_j = v^T tanh(W_q s + W_k k_j + b)``  (:class:`AdditiveScore`; ``W_k k_j + b`` once per sequence)
    2. align   ``a = softmax(e)`` over the real source positions  (:class:`SoftmaxAlign`)
    3. context ``c_t = sum_j a_j k_j``  (:class:`Context`)
    4. RNN     ``h_t = cell([emb(y_{t-1}); c_t], h_{t-1})``
    5. output  ``logits_t = W_o [h_t; c_t] + b_o``

    ``attn_dim``: size of the additive score's hidden layer (default ``hidden_size``).
    Step cache: ``(score_cache, align_cache, context_cache, cell_cache)``.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, attn_dim=None, cell="gru", padding_idx=0):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        attn_dim = hidden_size if attn_dim is None else check_positive_int(attn_dim, "attn_dim", "BahdanauDecoder")
        self.score = AdditiveScore(hidden_size, enc_dim, attn_dim, bias=True)
        self.align = SoftmaxAlign()
        self.context = Context()
        self.cell = self._make_cell(embed_dim + enc_dim)
        self.out = Linear(hidden_size + enc_dim, vocab_size)

    def _start(self, enc_out, h0, c0, src_mask):
        memory, state = super()._start(enc_out, h0, c0, src_mask)
        memory["keys"] = self.score.project_keys(enc_out)  # W_k k_j + b: the keys do not change, once
        return memory, state

    def _start_backward(self, d_memory, memory):
        # context_t = a_t @ enc_out at every step: d enc_out = sum_t a_t^T dc_t, ONE (B, S, T) @ (B, T, E)
        # product over all steps instead of T outer products (B, S, E), each added up
        d_enc = d_memory["enc_out"] + self.context.values_backward(d_memory["context_calls"])
        return d_enc + self.score.project_keys_backward(d_memory["keys"], memory["enc_out"]), None

    def step_forward(self, emb_t, state, memory):
        query = state[0][:, None, :]  # h_{t-1}: one query row (B, 1, H)
        scores, score_cache = _forward(self.score, query, memory["keys"], projected=True)  # 1. (B, 1, S)
        weights, align_cache = _forward(self.align, scores, mask=memory["mask"])  # 2. (B, 1, S)
        context, context_cache = _forward(self.context, weights, memory["enc_out"])  # 3. (B, 1, E)
        c = context[:, 0]
        new_state, cell_cache = self.cell.step(xp.concatenate([emb_t, c], axis=-1), state)  # 4.
        features = xp.concatenate([new_state[0], c], axis=-1)  # 5. [h_t; c_t] for the output layer
        return features, weights[:, 0], new_state, (score_cache, align_cache, context_cache, cell_cache)

    def step_backward(self, d_features, d_new_state, cache, d_memory):
        score_cache, align_cache, context_cache, cell_cache = cache
        H, Em = self.hidden_size, self.embed_dim
        # forward was: features = [h_t; c_t]   (h_t also went on to step t+1)
        d_h, d_c = d_new_state[0] + d_features[:, :H], d_features[:, H:]
        # forward was: new_state = cell([emb_t; c], state)
        d_x, d_state = self.cell.step_backward((d_h, *d_new_state[1:]), cell_cache)
        d_emb, d_c = d_x[:, :Em], d_c + d_x[:, Em:]  # c_t was also an RNN input
        # forward was: context = weights @ enc_out; its d enc_out: for all steps at once (_start_backward)
        d_weights = self.context.weights_backward(d_c[:, None, :], context_cache)
        d_memory["context_calls"].append((d_c[:, None, :], context_cache))
        # forward was: weights = softmax(scores) over the real source positions
        d_scores = _backward(self.align, d_weights, align_cache)
        # forward was: scores = v^T tanh(W_q h_{t-1} + keys)
        d_query, d_keys = _backward(self.score, d_scores, score_cache)
        d_memory["keys"] += d_keys
        return d_emb, (d_state[0] + d_query[:, 0], *d_state[1:])  # h_{t-1} was also the query


LUONG_SCORES = ("dot", "general", "additive")


class LuongDecoder(_AdditiveNames, _Decoder):
    """Luong et al. (2015), global attention: attend with the *current* state after the RNN step.

    At step ``t``:

    1. RNN     ``h_t = cell(emb(y_{t-1}), h_{t-1})``
    2. score   ``e_j = score(h_t, k_j)``, one of Luong's three score modules:

       - ``"dot"``      :class:`DotScore`      ``h_t . k_j``              (needs ``hidden_size == enc_dim``)
       - ``"general"``  :class:`GeneralScore`  ``h_t^T W k_j``
       - ``"additive"`` :class:`AdditiveScore` ``v^T tanh(W_q h_t + W_k k_j + b)`` (Luong's "concat";
         that old name is still accepted; ``W_k k_j + b`` once per sequence)

       or any score **module** of :mod:`npattention.attention.scores` (``forward(q (B, 1, H),
       k (B, S, E)) -> (B, 1, S)``, ``backward -> (dq, dk)``).
    3. align   ``a = softmax(e)`` over the real source positions; context ``c_t = sum_j a_j k_j``
    4. attentional state ``h~_t = tanh(W_c [c_t; h_t])``; output ``logits_t = W_o h~_t + b_o``

    (Luong's "input feeding" of ``h~_{t-1}`` into the next step is left out: then the
    output layers depend on no later step and run once over all steps.)
    Step cache: ``(cell_cache, score_cache, align_cache, context_cache)``.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, score="dot", cell="gru", padding_idx=0,
                 attn_dim=None):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        if score == "concat":  # Luong's name for the additive score (deprecated here: "concat" is ConcatScore)
            score = "additive"
        if isinstance(score, Module):
            _check_score_sizes(score, hidden_size, enc_dim, "LuongDecoder")
            self.score_name, self.score = type(score).__name__, score
        elif score not in LUONG_SCORES:
            raise ValueError(f"LuongDecoder: 'score' must be 'dot', 'general', 'additive' or a score module, "
                             f"got {score!r}")
        elif score == "dot":
            if hidden_size != enc_dim:
                raise ValueError(f"LuongDecoder: score='dot' needs hidden_size == enc_dim, got {hidden_size} and "
                                 f"{enc_dim}; use score='general' or 'additive'")
            self.score_name, self.score = score, DotScore()
        elif score == "general":
            self.score_name, self.score = score, GeneralScore(hidden_size, enc_dim)
        else:
            attn_dim = hidden_size if attn_dim is None else check_positive_int(attn_dim, "attn_dim", "LuongDecoder")
            self.score_name, self.score = score, AdditiveScore(hidden_size, enc_dim, attn_dim, bias=True)
        self.projects_keys = isinstance(self.score, AdditiveScore)  # then the keys are projected once
        # the memory array the score reads: the projected keys, or the encoder outputs themselves
        # (then their gradient goes straight into d_enc_out: no second (B, S, E) buffer to add up)
        self.keys_name = "keys" if self.projects_keys else "enc_out"
        # dot, general: d keys of all steps in one product after the loop (as Context's d enc_out)
        self.sums_key_grads = hasattr(self.score, "key_backward")
        self.align = SoftmaxAlign()
        self.context = Context()
        self.cell = self._make_cell(embed_dim)
        self.combine = Linear(enc_dim + hidden_size, hidden_size, bias=False)  # W_c
        self.combine_tanh = Tanh()
        self.out = Linear(hidden_size, vocab_size)

    def _start(self, enc_out, h0, c0, src_mask):
        memory, state = super()._start(enc_out, h0, c0, src_mask)
        if self.projects_keys:
            memory["keys"] = self.score.project_keys(enc_out)  # W_k k_j + b: once per sequence
        return memory, state

    def _start_backward(self, d_memory, memory):
        # context_t = a_t @ enc_out at every step: d enc_out = sum_t a_t^T dc_t in ONE product (as Bahdanau)
        d_enc = d_memory["enc_out"] + self.context.values_backward(d_memory["context_calls"])
        if self.sums_key_grads:  # dot, general: the keys are enc_out; d keys = sum_t ds_t^T q_t, one product
            d_enc = d_enc + self.score.key_backward(d_memory["score_calls"])
        if not self.projects_keys:
            return d_enc, None  # the score read enc_out itself (keys_name)
        return d_enc + self.score.project_keys_backward(d_memory["keys"], memory["enc_out"]), None

    def head(self, features):
        return self.out(self.combine_tanh(self.combine(features)))  # 4. h~ = tanh(W_c [c; h]), logits

    def head_backward(self, d_logits):
        return self.combine.backward(self.combine_tanh.backward(self.out.backward(d_logits)))

    def step_forward(self, emb_t, state, memory):
        new_state, cell_cache = self.cell.step(emb_t, state)  # 1. RNN first
        query = new_state[0][:, None, :]  # h_t, the CURRENT state: one query row (B, 1, H)
        kw = {"projected": True} if self.projects_keys else {}
        scores, score_cache = _forward(self.score, query, memory[self.keys_name], **kw)  # 2. (B, 1, S)
        weights, align_cache = _forward(self.align, scores, mask=memory["mask"])  # 3. (B, 1, S)
        context, context_cache = _forward(self.context, weights, memory["enc_out"])  # (B, 1, E)
        features = xp.concatenate([context[:, 0], new_state[0]], axis=-1)  # [c_t; h_t] for the head
        return features, weights[:, 0], new_state, (cell_cache, score_cache, align_cache, context_cache)

    def step_backward(self, d_features, d_new_state, cache, d_memory):
        cell_cache, score_cache, align_cache, context_cache = cache
        E = self.enc_dim
        # forward was: features = [c_t; h_t]
        d_c, d_h = d_features[:, :E], d_features[:, E:]
        # forward was: context = weights @ enc_out; its d enc_out: for all steps at once (_start_backward)
        d_weights = self.context.weights_backward(d_c[:, None, :], context_cache)
        d_memory["context_calls"].append((d_c[:, None, :], context_cache))
        # forward was: weights = softmax(scores) over the real source positions
        d_scores = _backward(self.align, d_weights, align_cache)
        # forward was: scores = score(h_t, keys)
        if self.sums_key_grads:  # dot, general: d keys for all steps at once (_start_backward)
            d_query = self.score.query_backward(d_scores, score_cache)
            d_memory["score_calls"].append((d_scores, score_cache))
        else:
            d_query, d_keys = _backward(self.score, d_scores, score_cache)
            d_memory[self.keys_name] += d_keys
        # forward was: new_state = cell(emb_t, state); h_t went to the head, the score and step t+1
        d_new_state = (d_new_state[0] + d_h + d_query[:, 0], *d_new_state[1:])
        return self.cell.step_backward(d_new_state, cell_cache)

    def extra_repr(self):
        return f"score={self.score_name!r}"


class LocationDecoder(_Decoder):
    """Location-based attention in the decoder, as in PyTorch's seq2seq tutorial (``Attn`` in the notes).

    At step ``t``, with ``Q = emb(y_{t-1})``, ``K = h_{t-1}`` and ``V`` = the encoder outputs:

    1. score   ``e = W_a [Q; K] + b_a``: one linear layer over the concatenation, one
       score per source *position* (so ``max_len`` = the longest source it can read)
    2. align   ``a = softmax(e)`` (padding masked)
    3. context ``c = a V``
    4. ``attn_combine``: ``u = W_u [Q; c] + b_u``; then ``x = relu(u)`` (the tutorial's
       choice) feeds the RNN: ``h_t = cell(x, h_{t-1})``; ``logits_t = W_o h_t + b_o``

    Steps 1-4 are :class:`~npattention.attention.attention.LocationAttention`.  The score
    looks at position numbers, not at the content of the keys, which is why it needs
    ``max_len`` and learns slower than Bahdanau's or Luong's.
    Step cache: ``(attention_cache, x, cell_cache)``.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, max_len, cell="gru", padding_idx=0):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        self.max_len = check_positive_int(max_len, "max_len", type(self).__name__)
        self.attn = LocationAttention(embed_dim, hidden_size, max_len, enc_dim, hidden_size)
        self.cell = self._make_cell(hidden_size)
        self.out = Linear(hidden_size, vocab_size)

    def _start(self, enc_out, h0, c0, src_mask):
        memory, state = super()._start(enc_out, h0, c0, src_mask)
        B, S, E = enc_out.shape
        if S > self.max_len:
            raise ValueError(f"{type(self).__name__}: the source has {S} positions but 'max_len' is {self.max_len}")
        # V must have max_len rows: pad with zero rows that are always masked out
        memory["values"] = xp.concatenate([enc_out, xp.zeros((B, self.max_len - S, E), dtype=enc_out.dtype)], axis=1)
        mask = padding_mask(xp.full((B,), S), self.max_len) if src_mask is None else \
            xp.concatenate([src_mask, xp.ones((B, self.max_len - S), dtype=bool)], axis=1)
        memory["mask"] = mask[:, None, :]
        return memory, state

    def _start_backward(self, d_memory, memory):
        return d_memory["values"][:, :memory["enc_out"].shape[1]], None

    def step_forward(self, emb_t, state, memory):
        # Q = emb(y_{t-1}), K = h_{t-1} (one query row each), V = the padded encoder outputs
        (u, weights), attention_cache = _forward(self.attn, emb_t[:, None, :], state[0][:, None, :],
                                                 memory["values"], mask=memory["mask"])
        x = xp.maximum(u[:, 0], 0)  # relu
        new_state, cell_cache = self.cell.step(x, state)
        S = memory["enc_out"].shape[1]
        return new_state[0], weights[:, 0, :S], new_state, (attention_cache, x, cell_cache)

    def step_backward(self, d_features, d_new_state, cache, d_memory):
        attention_cache, x, cell_cache = cache
        # forward was: features = h_t (also on to step t+1); new_state = cell(x, state)
        d_x, d_state = self.cell.step_backward((d_new_state[0] + d_features, *d_new_state[1:]), cell_cache)
        d_u = (d_x * (x > 0))[:, None, :]  # forward was: x = relu(u)
        d_q, d_k, d_v = _backward(self.attn, d_u, attention_cache)
        d_memory["values"] += d_v
        return d_q[:, 0], (d_state[0] + d_k[:, 0], *d_state[1:])  # Q was emb_t, K was h_{t-1}

    def extra_repr(self):
        return f"max_len={self.max_len}"


Note004Decoder = LocationDecoder  # deprecated alias (the class notes' name), kept for one release


class PlainDecoder(_Decoder):
    """The baseline without attention (Cho et al. 2014): one fixed context for every step.

    The context ``c = h0`` is the encoder's last state (after the bridge), the same
    vector at every step -- the "fixed-length bottleneck".  ``h_t = cell([emb; c], h_{t-1})``,
    ``logits_t = W_o [h_t; c] + b_o``.  ``enc_out`` is accepted (same interface) but unused,
    so its gradient is zero; the returned weights are ``None``.  Step cache: ``(cell_cache,)``.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, cell="gru", padding_idx=0):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        self.cell = self._make_cell(embed_dim + hidden_size)
        self.out = Linear(2 * hidden_size, vocab_size)

    def _start(self, enc_out, h0, c0, src_mask):
        memory, state = super()._start(enc_out, h0, c0, src_mask)
        memory["context"] = h0
        return memory, state

    def _start_backward(self, d_memory, memory):
        return d_memory["enc_out"], d_memory["context"]  # enc_out was unused: zero gradient

    def step_forward(self, emb_t, state, memory):
        c = memory["context"]
        new_state, cell_cache = self.cell.step(xp.concatenate([emb_t, c], axis=-1), state)
        return xp.concatenate([new_state[0], c], axis=-1), None, new_state, (cell_cache,)

    def step_backward(self, d_features, d_new_state, cache, d_memory):
        (cell_cache,) = cache
        H, Em = self.hidden_size, self.embed_dim
        # forward was: features = [h_t; c]; new_state = cell([emb_t; c], state)
        d_memory["context"] += d_features[:, H:]
        d_x, d_state = self.cell.step_backward((d_new_state[0] + d_features[:, :H], *d_new_state[1:]), cell_cache)
        d_memory["context"] += d_x[:, Em:]
        return d_x[:, :Em], d_state


# Old checkpoints: the decoders' parameters before the score/align/context pieces were reused.
_LEGACY_KEYS = {"query_proj.weight": ("score.W_q", False), "key_proj.weight": ("score.W_k", False),
                "key_proj.bias": ("score.bias", False), "v": ("score.v", False),
                "score_proj.weight": ("score.weight", True)}  # True: Linear(H, E).weight = GeneralScore.weight^T


def _translate_legacy_state(state, prefix):
    """A state dict with the old decoder names (``query_proj``, ``key_proj``, ``v``, ``score_proj``) renamed."""
    state = dict(state)
    for old, (new, transpose) in _LEGACY_KEYS.items():
        if prefix + old in state:
            value = state.pop(prefix + old)
            state[prefix + new] = value.T if transpose else value
    return state


# ====================================================================== the model
ATTENTIONS = ("bahdanau", "luong", "location", "none")  # "note004": the old name of "location", still accepted


class Seq2Seq(Module):
    """Encoder + attention decoder.

    ``Seq2Seq(src_vocab, tgt_vocab, embed_dim=32, hidden_size=64, attention="bahdanau",
    score="dot", cell="gru", bidirectional=True, dec_hidden_size=None, attn_dim=None,
    max_src_len=None)``; ``max_src_len`` (the longest source) is needed by ``attention="location"``
    (old name ``"note004"``, still accepted).

    * ``forward(src (B, S), tgt_in (B, T), src_lengths (B,) = None) -> (logits (B, T, V),
      weights (B, T, S) or None)`` with teacher forcing; the weights are also kept in
      ``self.attention_weights`` for plotting.
    * ``backward(d_logits)``: through the decoder (every step, every attention), the
      bridge and the encoder; returns ``None`` (ids are not differentiable).
    * :meth:`greedy_decode` / :meth:`translate` for inference.

    With a bidirectional encoder of size ``H`` the encoder outputs have ``E = 2H``; the
    decoder has ``hidden_size`` ``H_dec = 2H`` (so that Luong's dot score works) unless
    ``dec_hidden_size`` is given.
    cache: none of its own (the encoder and the decoder keep theirs).
    """

    def __init__(self, src_vocab, tgt_vocab, embed_dim=32, hidden_size=64, attention="bahdanau", score="dot",
                 cell="gru", bidirectional=True, dec_hidden_size=None, attn_dim=None, max_src_len=None,
                 padding_idx=0):
        if attention not in ATTENTIONS + ("note004",):
            raise ValueError(f"Seq2Seq: 'attention' must be one of {ATTENTIONS}, got {attention!r}")
        D = 2 if bidirectional else 1
        dec_hidden = D * hidden_size if dec_hidden_size is None else dec_hidden_size
        self.attention = attention
        self.config = {"src_vocab": src_vocab, "tgt_vocab": tgt_vocab, "embed_dim": embed_dim,
                       "hidden_size": hidden_size, "attention": attention, "score": score, "cell": cell,
                       "bidirectional": bidirectional, "dec_hidden_size": dec_hidden_size, "attn_dim": attn_dim,
                       "max_src_len": max_src_len, "padding_idx": padding_idx}
        self.encoder = Encoder(src_vocab, embed_dim, hidden_size, cell, bidirectional, dec_hidden, padding_idx)
        E = self.encoder.output_size
        args = (tgt_vocab, embed_dim, dec_hidden, E)
        if attention == "bahdanau":
            self.decoder = BahdanauDecoder(*args, attn_dim=attn_dim, cell=cell, padding_idx=padding_idx)
        elif attention == "luong":
            self.decoder = LuongDecoder(*args, score=score, cell=cell, padding_idx=padding_idx, attn_dim=attn_dim)
        elif attention in ("location", "note004"):
            if max_src_len is None:
                raise ValueError(f"Seq2Seq: attention={attention!r} needs 'max_src_len' (the longest source it "
                                 f"will read)")
            self.decoder = LocationDecoder(*args, max_len=max_src_len, cell=cell, padding_idx=padding_idx)
        else:
            self.decoder = PlainDecoder(*args, cell=cell, padding_idx=padding_idx)
        self.attention_weights = None

    def _encode(self, src, src_lengths):
        check_array(src, "src", "Seq2Seq", shape=("B", "S"), dtype="int")
        B, S = src.shape
        lengths = lengths_from(src_lengths, None, B, S, "Seq2Seq", name="src_lengths")
        # src_lengths as given: without it the encoder's RNN knows no step is padded (no state carrying)
        enc_out, state = self.encoder(src, src_lengths)
        return enc_out, state, padding_mask(lengths, S)

    def forward(self, src, tgt_in, src_lengths=None):
        enc_out, state, mask = self._encode(src, src_lengths)
        check_array(tgt_in, "tgt_in", "Seq2Seq", shape=(src.shape[0], None), dtype="int")
        logits, weights = self.decoder(tgt_in, enc_out, *state, src_mask=mask)
        self.attention_weights = weights
        return logits, weights

    def backward(self, grad_output):
        d_enc, *d_state = self.decoder.backward(grad_output)
        self.encoder.backward(d_enc, tuple(d_state))

    def load_state_dict(self, state, strict=True):
        """As :meth:`Module.load_state_dict`; also reads checkpoints with the decoders' old parameter names."""
        return super().load_state_dict(_translate_legacy_state(state, "decoder."), strict)

    def greedy_decode(self, src, src_lengths=None, max_len=20, sos=1, eos=2):
        """``(tokens (B, L), weights (B, L, S) or None)``: greedy decoding of a batch."""
        enc_out, state, mask = self._encode(src, src_lengths)
        return self.decoder.greedy(enc_out, *state, src_mask=mask, max_len=max_len, sos=sos, eos=eos)

    def translate(self, sources, vocab, max_len=20):
        """Strings in, strings out (greedy), e.g. ``model.translate(["21.11.2026"], vocab)``."""
        from .data import encode_sources

        src, lengths = encode_sources(sources, vocab)
        tokens, _ = self.greedy_decode(src, lengths, max_len=max_len, sos=vocab.SOS, eos=vocab.EOS)
        return vocab.decode_batch(tokens)

    def extra_repr(self):
        return f"attention={self.attention!r}"
