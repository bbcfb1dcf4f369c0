"""RNN encoder-decoder (seq2seq) with attention on the decoder side.

Note 004: *decoder-side* attention lets the decoder focus on the encoder outputs at
every step, instead of squeezing the whole input into one fixed-length vector.  The
pieces, all with hand-written backpropagation through time:

* :class:`Encoder` -- ``Embedding`` + ``GRU``/``LSTM`` (optionally bidirectional), and a
  *bridge* ``tanh(W [h_fwd; h_bwd] + b)`` to the decoder's hidden size.
* Decoders, ``forward(tgt_in (B, T), enc_out (B, S, E), h0 (B, H), c0=None, src_mask=None)
  -> (logits (B, T, V), weights (B, T, S))``:

  - :class:`BahdanauDecoder` -- attention *before* the RNN step, from the previous state
    ``h_{t-1}``: additive score ``v^T tanh(W_q h_{t-1} + W_k k_j)``; the context is fed
    into the RNN together with the embedded input.
  - :class:`LuongDecoder` -- attention *after* the RNN step, from ``h_t``: ``dot``,
    ``general`` or ``concat`` score; attentional state ``h~_t = tanh(W_c [c_t; h_t])``,
    then the output projection.
  - :class:`Note004Decoder` -- note 004's ``Attn`` (concat(Q, K) -> Linear -> softmax ->
    bmm with V -> concat with Q -> Linear "attn_combine") as the decoder attention, the
    way PyTorch's seq2seq tutorial uses it.
  - :class:`PlainDecoder` -- the baseline without attention: the context is the encoder's
    last state, the same vector at every step (Cho et al. 2014).

* :class:`Seq2Seq` -- encoder + decoder; teacher-forcing ``forward(src, tgt_in,
  src_lengths) -> (logits, weights)`` and batched greedy decoding :meth:`Seq2Seq.greedy_decode`.

Every attention step keeps the three named steps: **score**, **align** (masked
softmax over the real source positions) and **context** (weighted sum of encoder
outputs).  Token conventions follow :mod:`npattention.data` (``<pad>=0, <sos>=1, <eos>=2``).
docs/seq2seq.md derives the backward of a decoder step.
"""
from .attention.attention import Attn
from .backend import get_rng, xp
from .masks import padding_mask
from .softmax import softmax, softmax_backward
from .layers import Embedding, Linear, Tanh
from .module import Module, Parameter
from .rnn import GRU, LSTM, GRUCell, LSTMCell, lengths_from
from .validate import check_array, check_positive_int

CELLS = {"gru": (GRU, GRUCell), "lstm": (LSTM, LSTMCell)}


def _cell_kind(cell, where):
    if cell not in CELLS:
        raise ValueError(f"{where}: 'cell' must be 'gru' or 'lstm', got {cell!r}")
    return cell


# A Module keeps ONE cache: the one from its last forward.  A decoder calls the same
# layer at every time step, so it keeps each step's caches (the module's and its
# sub-modules') and puts them back before that step's backward.
def _call(module, *inputs, **kwargs):
    out = module(*inputs, **kwargs)
    return out, [m.cache for m in module.modules()]


def _back(module, caches, grad):
    for m, cache in zip(module.modules(), caches):
        m.cache = cache
    return module.backward(grad)


def _attend_weights_context(scores, enc_out, src_mask):
    """Steps 2 and 3 for one decoder step: ``scores (B, S)`` -> ``(weights (B, S), context (B, E))``."""
    w = softmax(scores, axis=-1, mask=src_mask)  # align: masked softmax over source positions
    ctx = (w[:, None, :] @ enc_out)[:, 0]  # context: sum_j w_j k_j
    return w, ctx


def _attend_backward(d_ctx, w, enc_out, d_enc):
    """Backward of align + context: adds to ``d_enc`` and returns ``d_scores (B, S)``."""
    d_enc += w[:, :, None] * d_ctx[:, None, :]  # d k_j = w_j dc
    d_w = (enc_out @ d_ctx[:, :, None])[:, :, 0]  # d w_j = k_j . dc
    return softmax_backward(d_w, w)  # masked positions have w = 0 -> zero gradient


def _score_vector(attn_dim):
    """The additive score's ``v``, initialised like a Linear layer's weights."""
    bound = 1.0 / attn_dim ** 0.5
    return Parameter(get_rng().uniform((attn_dim,), -bound, bound))


def _additive_scores(q, keys, v):
    """Additive (concat) score ``e_j = v^T tanh(q + u_j)`` for a projected query ``q (B, A)``
    and projected keys ``u (B, S, A)``; returns ``(scores (B, S), hid)``."""
    hid = xp.tanh(keys + q[:, None, :])  # (B, S, A)
    return hid @ v, hid


def _additive_backward(d_scores, hid, v, d_keys):
    """Backward of :func:`_additive_scores`: adds ``dv`` and ``d_keys``; returns ``dq (B, A)``."""
    v.grad += xp.einsum("bsa,bs->a", hid, d_scores)
    d_pre = (d_scores[:, :, None] * v.data) * (1 - hid ** 2)  # through tanh, (B, S, A)
    d_keys += d_pre
    return d_pre.sum(axis=1)  # q was broadcast over the S positions


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
        check_array(src, "src", "Encoder", shape=("B", "S"), dtype="int")
        x = self.embedding(src)  # (B, S, E)
        out, final = self.rnn(x, lengths=lengths)
        finals = final if self.cell == "lstm" else (final,)  # each (D, B, H)
        B = src.shape[0]
        joined = [f.transpose(1, 0, 2).reshape(B, -1) for f in finals]  # (B, D*H): [fwd; bwd]
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
    """The time loop shared by every decoder (teacher forcing and greedy decoding).

    A subclass defines the pieces of one step:

    * ``_memory(enc_out, h0, src_mask) -> mem``: what is computed once per sequence;
    * ``_step(emb_t, state, mem) -> (feat_t, weights_t, new_state, cache)``;
    * ``_head(feat) -> logits``: the output layers (run once over all steps in training;
      by default the ``Linear`` ``self.out``);
    * the matching ``_head_backward``, ``_step_backward``, ``_memory_backward``.
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

    def _head(self, feat):
        return self.out(feat)

    def _head_backward(self, d_logits):
        return self.out.backward(d_logits)

    def _make_cell(self, input_size):
        return CELLS[self.cell_kind][1](input_size, self.hidden_size)

    def _check(self, tgt_in, enc_out, h0, c0, src_mask):
        name = type(self).__name__
        dims = {}
        check_array(tgt_in, "tgt_in", name, shape=("B", "T"), dtype="int", dims=dims)
        if tgt_in.shape[1] == 0:
            raise ValueError(f"{name}: 'tgt_in' must hold at least one step (T >= 1), got shape {tuple(tgt_in.shape)}")
        check_array(enc_out, "enc_out", name, shape=("B", "S", self.enc_dim), dims=dims)
        check_array(h0, "h0", name, shape=("B", self.hidden_size), dims=dims)
        if c0 is not None:
            if self.cell_kind != "lstm":
                raise ValueError(f"{name}: 'c0' is only used with cell='lstm', this decoder has cell='gru'")
            check_array(c0, "c0", name, shape=("B", self.hidden_size), dims=dims)
        if src_mask is not None:
            check_array(src_mask, "src_mask", name, shape=("B", "S"), dtype="bool", dims=dims)

    def _state0(self, h0, c0):
        if self.cell_kind == "gru":
            return (h0,)
        return (h0, xp.zeros_like(h0) if c0 is None else c0)

    def forward(self, tgt_in, enc_out, h0, c0=None, src_mask=None):
        self._check(tgt_in, enc_out, h0, c0, src_mask)
        T = tgt_in.shape[1]
        emb = self.embedding(tgt_in)  # (B, T, E): teacher forcing knows every input already
        mem = self._memory(enc_out, h0, src_mask)
        state = self._state0(h0, c0)
        feats, weights, caches = [], [], []
        # The loop over time IS the lesson: step t needs the state (and, for Bahdanau,
        # the attention) of step t-1.  Each step is vectorised over the batch.
        for t in range(T):
            feat, w, state, cache = self._step(emb[:, t], state, mem)
            feats.append(feat)
            weights.append(w)
            caches.append(cache)
        logits = self._head(xp.stack(feats, axis=1))  # output layers for all steps at once
        self.cache = (caches, mem, c0 is not None, emb.shape)
        attn = None if weights[0] is None else xp.stack(weights, axis=1)  # (B, T, S)
        return logits, attn

    def backward(self, grad_output):
        """BPTT through the whole decoder; returns ``(d_enc_out, d_h0)`` (and ``d_c0`` if given)."""
        caches, mem, c0_given, emb_shape = self.cache
        d_feats = self._head_backward(grad_output)  # (B, T, F)
        d_mem = self._memory_grads(mem)
        d_state = tuple(xp.zeros_like(s) for s in caches[0]["state"])
        d_emb = xp.zeros(emb_shape, dtype=grad_output.dtype)
        for t in range(len(caches) - 1, -1, -1):
            d_emb[:, t], d_state = self._step_backward(d_feats[:, t], d_state, caches[t], mem, d_mem)
        self.embedding.backward(d_emb)
        d_enc, d_h0_extra = self._memory_backward(d_mem, mem)
        d_h0 = d_state[0] if d_h0_extra is None else d_state[0] + d_h0_extra
        return (d_enc, d_h0, d_state[1]) if c0_given else (d_enc, d_h0)

    def greedy(self, enc_out, h0, c0=None, src_mask=None, max_len=20, sos=1, eos=2):
        """Greedy decoding, vectorised over the batch: feed back the argmax token.

        Returns ``(tokens (B, L), weights (B, L, S) or None)``, ``L <= max_len``; decoding
        stops early once every row has produced ``eos`` (later tokens of a finished row are ``eos``).
        It reuses the layers' caches, so run it after (not between) a forward and its backward.
        """
        check_positive_int(max_len, "max_len", f"{type(self).__name__}.greedy")
        B = enc_out.shape[0]
        self._check(xp.zeros((B, 1), dtype=xp.int64), enc_out, h0, c0, src_mask)
        mem = self._memory(enc_out, h0, src_mask)
        state = self._state0(h0, c0)
        y = xp.full((B,), sos, dtype=xp.int64)
        done = xp.zeros((B,), dtype=bool)
        tokens, weights = [], []
        for _ in range(max_len):  # the loop over time: each input is the previous output
            emb = self.embedding(y[:, None])[:, 0]
            feat, w, state, _ = self._step(emb, state, mem)
            y = xp.argmax(self._head(feat), axis=-1)
            y = xp.where(done, eos, y)
            done = done | (y == eos)
            tokens.append(y)
            weights.append(w)
            if bool(done.all()):
                break
        attn = None if weights[0] is None else xp.stack(weights, axis=1)
        return xp.stack(tokens, axis=1), attn

    # defaults for decoders without per-sequence precomputation
    def _memory(self, enc_out, h0, src_mask):
        return {"enc_out": enc_out, "mask": src_mask}

    def _memory_grads(self, mem):
        return {"enc_out": xp.zeros_like(mem["enc_out"])}

    def _memory_backward(self, d_mem, mem):
        return d_mem["enc_out"], None


class BahdanauDecoder(_Decoder):
    """Bahdanau et al. (2015): attend with the *previous* state, feed the context into the RNN.

    At step ``t`` with ``s = h_{t-1}`` and encoder outputs ``k_j (B, S, E)``:

    1. score   ``e_j = v^T tanh(W_q s + W_k k_j)``   (additive; ``W_k k_j`` is computed once)
    2. align   ``a = softmax(e)`` over the real source positions
    3. context ``c_t = sum_j a_j k_j``
    4. RNN     ``h_t = cell([emb(y_{t-1}); c_t], h_{t-1})``
    5. output  ``logits_t = W_o [h_t; c_t] + b_o``

    ``attn_dim``: size of the additive score's hidden layer (default ``hidden_size``).
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, attn_dim=None, cell="gru", padding_idx=0):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        attn_dim = hidden_size if attn_dim is None else check_positive_int(attn_dim, "attn_dim", "BahdanauDecoder")
        self.query_proj = Linear(hidden_size, attn_dim, bias=False)  # W_q
        self.key_proj = Linear(enc_dim, attn_dim)  # W_k (with the score's bias)
        self.v = _score_vector(attn_dim)
        self.cell = self._make_cell(embed_dim + enc_dim)
        self.out = Linear(hidden_size + enc_dim, vocab_size)

    def _memory(self, enc_out, h0, src_mask):
        # The keys do not change from step to step: project them once per sequence.
        keys, key_cache = _call(self.key_proj, enc_out)  # (B, S, A)
        return {"enc_out": enc_out, "mask": src_mask, "keys": keys, "key_cache": key_cache}

    def _memory_grads(self, mem):
        return {"enc_out": xp.zeros_like(mem["enc_out"]), "keys": xp.zeros_like(mem["keys"])}

    def _memory_backward(self, d_mem, mem):
        d_enc = d_mem["enc_out"] + _back(self.key_proj, mem["key_cache"], d_mem["keys"])
        return d_enc, None

    def _step(self, emb_t, state, mem):
        q, q_cache = _call(self.query_proj, state[0])  # (B, A), from the PREVIOUS state
        scores, hid = _additive_scores(q, mem["keys"], self.v.data)  # 1. score (B, S)
        w, ctx = _attend_weights_context(scores, mem["enc_out"], mem["mask"])  # 2. align, 3. context
        new_state, cell_cache = self.cell.step(xp.concatenate([emb_t, ctx], axis=-1), state)
        feat = xp.concatenate([new_state[0], ctx], axis=-1)  # (B, H + E) for the output layer
        return feat, w, new_state, {"state": state, "q": q_cache, "hid": hid, "w": w, "cell": cell_cache}

    def _step_backward(self, d_feat, d_state, cache, mem, d_mem):
        H, E = self.hidden_size, self.embed_dim
        d_state = (d_state[0] + d_feat[:, :H],) + tuple(d_state[1:])  # h_t went to the output layer
        d_ctx = d_feat[:, H:]  # ... and so did c_t
        d_x, d_prev = self.cell.step_backward(d_state, cache["cell"])
        d_emb, d_ctx = d_x[:, :E], d_ctx + d_x[:, E:]  # c_t was also an RNN input
        d_scores = _attend_backward(d_ctx, cache["w"], mem["enc_out"], d_mem["enc_out"])
        d_q = _additive_backward(d_scores, cache["hid"], self.v, d_mem["keys"])
        d_prev = (d_prev[0] + _back(self.query_proj, cache["q"], d_q),) + tuple(d_prev[1:])
        return d_emb, d_prev


LUONG_SCORES = ("dot", "general", "concat")


class LuongDecoder(_Decoder):
    """Luong et al. (2015), global attention: attend with the *current* state after the RNN step.

    At step ``t``:

    1. RNN     ``h_t = cell(emb(y_{t-1}), h_{t-1})``
    2. score   ``e_j = score(h_t, k_j)``, Luong's three:

       - ``"dot"``     ``h_t . k_j``                      (needs ``hidden_size == enc_dim``)
       - ``"general"`` ``h_t^T W_a k_j = (W_a^T h_t) . k_j`` (``W_a^T h_t`` once per step)
       - ``"concat"``  ``v^T tanh(W_a [h_t; k_j]) = v^T tanh(W_q h_t + W_k k_j)`` (``W_k k_j`` once)

       or any score **module** with the interface of :mod:`npattention.attention.scores`:
       ``forward(q (B, 1, H), k (B, S, E)) -> (B, 1, S)``, ``backward -> (dq, dk)``.
    3. align   ``a = softmax(e)`` over the real source positions; context ``c_t = sum_j a_j k_j``
    4. attentional state ``h~_t = tanh(W_c [c_t; h_t])``; output ``logits_t = W_o h~_t + b_o``

    (Luong's "input feeding" of ``h~_{t-1}`` into the next step is left out: then the
    output layers depend on no later step and run once over all steps.)
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, score="dot", cell="gru", padding_idx=0,
                 attn_dim=None):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        if isinstance(score, Module):
            self.score_name, self.score = type(score).__name__, score
        elif score not in LUONG_SCORES:
            raise ValueError(f"LuongDecoder: 'score' must be 'dot', 'general', 'concat' or a score module, "
                             f"got {score!r}")
        else:
            self.score_name, self.score = score, None
        if score == "dot" and hidden_size != enc_dim:
            raise ValueError(f"LuongDecoder: score='dot' needs hidden_size == enc_dim, got {hidden_size} and "
                             f"{enc_dim}; use score='general' or 'concat'")
        if score == "general":
            self.score_proj = Linear(hidden_size, enc_dim, bias=False)  # W_a^T h
        if score == "concat":
            attn_dim = hidden_size if attn_dim is None else check_positive_int(attn_dim, "attn_dim", "LuongDecoder")
            self.query_proj = Linear(hidden_size, attn_dim, bias=False)
            self.key_proj = Linear(enc_dim, attn_dim)
            self.v = _score_vector(attn_dim)
        self.cell = self._make_cell(embed_dim)
        self.combine = Linear(enc_dim + hidden_size, hidden_size, bias=False)  # W_c
        self.combine_tanh = Tanh()
        self.out = Linear(hidden_size, vocab_size)

    def _memory(self, enc_out, h0, src_mask):
        mem = {"enc_out": enc_out, "mask": src_mask}
        if self.score_name == "concat":
            mem["keys"], mem["key_cache"] = _call(self.key_proj, enc_out)  # W_k k_j, once
        return mem

    def _memory_grads(self, mem):
        grads = {"enc_out": xp.zeros_like(mem["enc_out"])}
        if "keys" in mem:
            grads["keys"] = xp.zeros_like(mem["keys"])
        return grads

    def _memory_backward(self, d_mem, mem):
        d_enc = d_mem["enc_out"]
        if "keys" in mem:
            d_enc = d_enc + _back(self.key_proj, mem["key_cache"], d_mem["keys"])
        return d_enc, None

    def _scores(self, h, mem):
        """Step 2 for the query ``h (B, H)``: ``(scores (B, S), cache)``."""
        k = mem["enc_out"]
        if self.score is not None:  # a score module
            scores, cache = _call(self.score, h[:, None, :], k)
            return scores[:, 0], cache
        if self.score_name == "dot":
            return (k @ h[:, :, None])[:, :, 0], h
        if self.score_name == "general":
            q, q_cache = _call(self.score_proj, h)  # (B, E)
            return (k @ q[:, :, None])[:, :, 0], (q, q_cache)
        q, q_cache = _call(self.query_proj, h)  # concat
        scores, hid = _additive_scores(q, mem["keys"], self.v.data)
        return scores, (q_cache, hid)

    def _scores_backward(self, d_scores, cache, mem, d_mem):
        """Backward of step 2: adds to the encoder-side gradients, returns ``dh (B, H)``."""
        k = mem["enc_out"]
        if self.score is not None:
            d_q, d_k = _back(self.score, cache, d_scores[:, None, :])
            d_mem["enc_out"] += d_k
            return d_q[:, 0]
        if self.score_name in ("dot", "general"):
            q = cache if self.score_name == "dot" else cache[0]
            d_mem["enc_out"] += d_scores[:, :, None] * q[:, None, :]  # d k_j = e'_j q
            d_q = (d_scores[:, None, :] @ k)[:, 0]  # d q = sum_j e'_j k_j
            return d_q if self.score_name == "dot" else _back(self.score_proj, cache[1], d_q)
        q_cache, hid = cache
        d_q = _additive_backward(d_scores, hid, self.v, d_mem["keys"])
        return _back(self.query_proj, q_cache, d_q)

    def _step(self, emb_t, state, mem):
        new_state, cell_cache = self.cell.step(emb_t, state)  # 1. RNN first
        h = new_state[0]
        scores, score_cache = self._scores(h, mem)  # 2. score (B, S), with the CURRENT state
        w, ctx = _attend_weights_context(scores, mem["enc_out"], mem["mask"])  # 3. align, context
        feat = xp.concatenate([ctx, h], axis=-1)  # [c_t; h_t]
        return feat, w, new_state, {"state": state, "score": score_cache, "w": w, "cell": cell_cache}

    def _head(self, feat):
        return self.out(self.combine_tanh(self.combine(feat)))  # 4. h~ = tanh(W_c [c; h]), logits

    def _head_backward(self, d_logits):
        return self.combine.backward(self.combine_tanh.backward(self.out.backward(d_logits)))

    def _step_backward(self, d_feat, d_state, cache, mem, d_mem):
        E = self.enc_dim
        d_ctx, d_h = d_feat[:, :E], d_feat[:, E:]
        d_scores = _attend_backward(d_ctx, cache["w"], mem["enc_out"], d_mem["enc_out"])
        d_query = self._scores_backward(d_scores, cache["score"], mem, d_mem)
        # h_t went to the output, to the score (as the query) and to the next step
        d_state = (d_state[0] + d_h + d_query, *d_state[1:])
        return self.cell.step_backward(d_state, cache["cell"])

    def extra_repr(self):
        return f"score={self.score_name!r}"


class Note004Decoder(_Decoder):
    """Note 004's ``Attn`` as the decoder attention (as in PyTorch's seq2seq tutorial).

    At step ``t``, with ``Q = emb(y_{t-1})``, ``K = h_{t-1}`` and ``V`` = the encoder outputs:

    1. score   ``e = W_a [Q; K] + b_a``: one linear layer over the concatenation, one
       score per source *position* (so ``max_len`` = the longest source it can read)
    2. align   ``a = softmax(e)`` (padding masked)
    3. context ``c = a V``
    4. ``attn_combine``: ``u = W_u [Q; c] + b_u``; then ``x = relu(u)`` (the tutorial's
       choice) feeds the RNN: ``h_t = cell(x, h_{t-1})``; ``logits_t = W_o h_t + b_o``

    Steps 1-4 are :class:`npattention.attention.attention.Attn`.  The score looks at
    position numbers, not at the content of the keys ("location-based"), which is why
    it needs ``max_len`` and learns slower than Bahdanau's or Luong's.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, max_len, cell="gru", padding_idx=0):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        self.max_len = check_positive_int(max_len, "max_len", "Note004Decoder")
        self.attn = Attn(embed_dim, hidden_size, max_len, enc_dim, hidden_size)
        self.cell = self._make_cell(hidden_size)
        self.out = Linear(hidden_size, vocab_size)

    def _memory(self, enc_out, h0, src_mask):
        B, S, E = enc_out.shape
        if S > self.max_len:
            raise ValueError(f"Note004Decoder: the source has {S} positions but 'max_len' is {self.max_len}")
        # V must have max_len rows: pad with zero rows that are always masked out
        V = xp.concatenate([enc_out, xp.zeros((B, self.max_len - S, E), dtype=enc_out.dtype)], axis=1)
        mask = padding_mask(xp.full((B,), S), self.max_len) if src_mask is None else \
            xp.concatenate([src_mask, xp.ones((B, self.max_len - S), dtype=bool)], axis=1)
        return {"enc_out": enc_out, "V": V, "mask": mask}

    def _memory_grads(self, mem):
        return {"V": xp.zeros_like(mem["V"])}

    def _memory_backward(self, d_mem, mem):
        return d_mem["V"][:, :mem["enc_out"].shape[1]], None

    def _step(self, emb_t, state, mem):
        # Q = emb(y_{t-1}), K = h_{t-1} (one query row each), V = the padded encoder outputs
        (u, w), attn_cache = _call(self.attn, emb_t[:, None, :], state[0][:, None, :], mem["V"],
                                   mask=mem["mask"][:, None, :])
        x = xp.maximum(u[:, 0], 0)  # relu
        new_state, cell_cache = self.cell.step(x, state)
        S = mem["enc_out"].shape[1]
        return new_state[0], w[:, 0, :S], new_state, {"state": state, "attn": attn_cache, "x": x, "cell": cell_cache}

    def _step_backward(self, d_feat, d_state, cache, mem, d_mem):
        d_state = (d_state[0] + d_feat, *d_state[1:])
        d_x, d_prev = self.cell.step_backward(d_state, cache["cell"])
        d_u = (d_x * (cache["x"] > 0))[:, None, :]
        d_q, d_k, d_v = _back(self.attn, cache["attn"], d_u)
        d_mem["V"] += d_v
        d_prev = (d_prev[0] + d_k[:, 0], *d_prev[1:])  # K was h_{t-1}
        return d_q[:, 0], d_prev  # Q was the embedded input

    def extra_repr(self):
        return f"max_len={self.max_len}"


class PlainDecoder(_Decoder):
    """The baseline without attention (Cho et al. 2014): one fixed context for every step.

    The context ``c = h0`` is the encoder's last state (after the bridge), the same
    vector at every step -- the "fixed-length bottleneck".  ``h_t = cell([emb; c], h_{t-1})``,
    ``logits_t = W_o [h_t; c] + b_o``.  ``enc_out`` is accepted (same interface) but unused,
    so its gradient is zero; the returned weights are ``None``.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, enc_dim, cell="gru", padding_idx=0):
        super().__init__(vocab_size, embed_dim, hidden_size, enc_dim, cell, padding_idx)
        self.cell = self._make_cell(embed_dim + hidden_size)
        self.out = Linear(2 * hidden_size, vocab_size)

    def _memory(self, enc_out, h0, src_mask):
        return {"enc_out": enc_out, "ctx": h0}

    def _memory_grads(self, mem):
        return {"ctx": xp.zeros_like(mem["ctx"])}

    def _memory_backward(self, d_mem, mem):
        return xp.zeros_like(mem["enc_out"]), d_mem["ctx"]

    def _step(self, emb_t, state, mem):
        ctx = mem["ctx"]
        new_state, cell_cache = self.cell.step(xp.concatenate([emb_t, ctx], axis=-1), state)
        return xp.concatenate([new_state[0], ctx], axis=-1), None, new_state, {"state": state, "cell": cell_cache}

    def _step_backward(self, d_feat, d_state, cache, mem, d_mem):
        H, E = self.hidden_size, self.embed_dim
        d_state = (d_state[0] + d_feat[:, :H],) + tuple(d_state[1:])
        d_mem["ctx"] += d_feat[:, H:]
        d_x, d_prev = self.cell.step_backward(d_state, cache["cell"])
        d_mem["ctx"] += d_x[:, E:]
        return d_x[:, :E], d_prev


# ====================================================================== the model
ATTENTIONS = ("bahdanau", "luong", "note004", "none")


class Seq2Seq(Module):
    """Encoder + attention decoder.

    ``Seq2Seq(src_vocab, tgt_vocab, embed_dim=32, hidden_size=64, attention="bahdanau",
    score="dot", cell="gru", bidirectional=True, dec_hidden_size=None, attn_dim=None,
    max_src_len=None)``; ``max_src_len`` (the longest source) is needed by ``attention="note004"``.

    * ``forward(src (B, S), tgt_in (B, T), src_lengths (B,) = None) -> (logits (B, T, V),
      weights (B, T, S) or None)`` with teacher forcing; the weights are also kept in
      ``self.attention_weights`` for plotting.
    * ``backward(d_logits)``: through the decoder (every step, every attention), the
      bridge and the encoder; returns ``None`` (ids are not differentiable).
    * :meth:`greedy_decode` / :meth:`translate` for inference.

    With a bidirectional encoder of size ``H`` the encoder outputs have ``E = 2H``; the
    decoder has ``hidden_size`` ``H_dec = 2H`` (so that Luong's dot score works) unless
    ``dec_hidden_size`` is given.
    """

    def __init__(self, src_vocab, tgt_vocab, embed_dim=32, hidden_size=64, attention="bahdanau", score="dot",
                 cell="gru", bidirectional=True, dec_hidden_size=None, attn_dim=None, max_src_len=None,
                 padding_idx=0):
        if attention not in ATTENTIONS:
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
        elif attention == "note004":
            if max_src_len is None:
                raise ValueError("Seq2Seq: attention='note004' needs 'max_src_len' (the longest source it will read)")
            self.decoder = Note004Decoder(*args, max_len=max_src_len, cell=cell, padding_idx=padding_idx)
        else:
            self.decoder = PlainDecoder(*args, cell=cell, padding_idx=padding_idx)
        self.attention_weights = None

    def _encode(self, src, src_lengths):
        check_array(src, "src", "Seq2Seq", shape=("B", "S"), dtype="int")
        B, S = src.shape
        lengths = lengths_from(src_lengths, None, B, S, "Seq2Seq")
        enc_out, state = self.encoder(src, lengths)
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
