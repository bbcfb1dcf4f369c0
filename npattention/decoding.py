"""Decoding: a KV cache, sampling (temperature, top-k, top-p) and beam search.

Generation is a loop over output positions -- **the loop is the lesson**: a token cannot
be chosen before the tokens it depends on.  Three ideas, each in its own section:

1. **KV cache.**  In a causal decoder the keys and values of positions ``0..t-1`` do not
   change when token ``t`` arrives.  So instead of re-running the whole prefix at every
   step (``O(t)`` work per layer per step, ``O(T^2)`` in all), keep every layer's keys and
   values in a :class:`KVCache` and, per step, compute the new token's query, key and value
   only: one key/value row is appended per layer and one query attends to all cached rows::

       q_t, k_t, v_t = x_t W_q^T, x_t W_k^T, x_t W_v^T       (B, H, 1, D) new row only
       K = [K; k_t],  V = [V; v_t]                            (B, H, t+1, D) the cache grows
       s = q_t K^T / sqrt(D)  ->  a = softmax(s, pad)  ->  c = a V        score, align, context

   The logits are those of the full recomputation (a test asserts ``<= 1e-12`` in float64,
   also with the ``positional="rope"|"alibi"|"relative"`` attention options: RoPE rotates
   each new key once, at its position, and the cache holds rotated keys; ALiBi and the
   relative bias add the new query rows of their score bias).  The step always uses the
   dense attention (one query row is small), whatever ``block_size`` (tiling) says.
   :class:`TransformerDecoderState` (encoder-decoder :class:`~npattention.transformer.Transformer`;
   the cross-attention keys/values of the encoder output are computed once) and
   :class:`GPTState` (decoder-only :class:`~npattention.gpt.GPT`) wrap a model with one;
   both have ``step(tokens) -> logits`` and ``reorder(index)`` (for beam search).

2. **Sampling** from ``softmax(logits / temperature)`` after keeping only the ``top_k``
   most likely tokens and/or the smallest set whose probability reaches ``top_p``
   (nucleus): :func:`sampling_distribution` gives the distribution, :func:`sample` draws
   from it with a seeded generator; :func:`generate` runs a GPT with them.

3. **Beam search** (:func:`beam_search`): keep the ``k`` best partial hypotheses by total
   log-probability; a hypothesis that emits ``<eos>`` is finished and scored
   ``log p(y) / lp(|y|)`` with the length penalty ``lp(L) = L^alpha``; batched over
   sources and beams.  It works with anything that has ``step``/``reorder``; width 1 is
   greedy decoding.  Shortcuts: :func:`beam_search_transformer`, :func:`beam_search_gpt` and
   :func:`beam_search_seq2seq` (the RNN encoder-decoders, through :class:`Seq2SeqDecoderState`).

Models run in eval mode (no dropout); their mode is restored afterwards.  This module
adds no parameters: the steps read the layers' own weights, so a trained model decodes
with or without the cache.
"""
import math
from dataclasses import dataclass, field

from .attention.positions import positions_forward
from .attention.rotary import RotaryEmbedding, apply_rotary
from .attention.sdpa import scaled_dot_product_attention
from .backend import Generator, get_rng, to_numpy, xp
from .data import Vocab
from .masks import causal_mask
from .softmax import log_softmax, softmax
from .validate import check_array, check_positive_int

__all__ = [
    "KVCache",
    "TransformerDecoderState",
    "GPTState",
    "greedy_search",
    "top_k_filter",
    "top_p_filter",
    "sampling_distribution",
    "sample",
    "generate",
    "BeamSearchResult",
    "beam_search",
    "beam_search_transformer",
    "beam_search_gpt",
    "Seq2SeqDecoderState",
    "beam_search_seq2seq",
]


# =============================================================================== 1. KV cache
class KVCache:
    """Keys and values of every layer's causal self-attention for the tokens seen so far.

    ``KVCache(num_layers, batch_size, num_heads, head_dim, max_len, dtype)``: for layer
    ``l``, ``keys[l]`` and ``values[l]`` are buffers ``(B, H, max_len, D)`` allocated once
    (like real implementations) of which the first ``length`` positions are filled;
    ``padding`` ``(B, max_len)`` is True at padding tokens (masked as keys).

    One step of ``n`` new tokens (``n = 1`` when generating, the prompt length for the
    first "prefill" step): :meth:`extend` moves ``length`` on by ``n`` and records their
    padding, then every layer :meth:`write` s its ``n`` new key/value rows and gets back
    the views ``K, V (B, H, length, D)`` to attend to.  :meth:`reorder` picks rows of the
    batch (beam search keeps the cache of each surviving beam's parent).
    """

    def __init__(self, num_layers, batch_size, num_heads, head_dim, max_len, dtype=xp.float64):
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys = [xp.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.values = [xp.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.padding = xp.zeros((batch_size, max_len), dtype=bool)
        self.length = 0
        self.max_len = max_len

    def extend(self, padding_new):
        """Start a step of ``n`` tokens whose padding is ``padding_new (B, n)``."""
        n = padding_new.shape[1]
        if self.length + n > self.max_len:
            raise ValueError(f"KVCache: {self.length} + {n} tokens exceed the cache's 'max_len' {self.max_len}")
        self.padding[:, self.length:self.length + n] = padding_new
        self.length += n

    def write(self, layer, k, v):
        """Store layer ``layer``'s new rows ``k, v (B, H, n, D)``; return ``K, V (B, H, length, D)``."""
        t, n = self.length, k.shape[2]
        self.keys[layer][:, :, t - n:t] = k
        self.values[layer][:, :, t - n:t] = v
        return self.keys[layer][:, :, :t], self.values[layer][:, :, :t]

    def key_mask(self, n):
        """``(B, 1, n, length)`` mask of the last step's ``n`` queries: padded keys, and the
        future within the step (query ``length-n+i`` may not see key ``j > length-n+i``)."""
        t = self.length
        return self.padding[:, None, None, :t] | causal_mask(t)[t - n:]

    def reorder(self, index):
        """Keep batch rows ``index`` (``(B',)`` ints, repeats allowed): ``cache[b] <- cache[index[b]]``."""
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        self.padding = self.padding[index]

    @property
    def nbytes(self):
        """Bytes of keys and values actually filled (``2 * layers * B * H * length * D * itemsize``)."""
        return sum(int(k[:, :, :self.length].nbytes) for k in self.keys + self.values)

    @property
    def allocated_nbytes(self):
        """Bytes of the preallocated key and value buffers."""
        return sum(int(k.nbytes) for k in self.keys + self.values)

    def __repr__(self):
        B, H, T, D = self.keys[0].shape if self.keys else (0, 0, 0, 0)
        return (f"KVCache(layers={len(self.keys)}, batch={B}, heads={H}, head_dim={D}, "
                f"length={self.length}/{T}, {self.nbytes / 1024:.1f} KiB filled)")


def _affine(x, W, b):
    return x @ W.T + b if b is not None else x @ W.T


def _cached_self_attention(mha, x, cache, layer):
    """One step of causal self-attention ``mha`` for the new positions ``x (B, n, E)``.

    Expand only the new rows, append their keys/values to the cache, attend with the new
    queries to every cached key (score, align, context in
    :func:`~npattention.attention.sdpa.scaled_dot_product_attention`), project.
    Returns ``(out (B, n, E), weights (B, H, n, length))``.
    """
    (Wq, bq, _, _), (Wk, bk, _, _), (Wv, bv, _, _) = mha._projections()
    q = mha._split_heads(_affine(x, Wq, bq))                       # (B, H, n, D) new queries
    k_new = mha._split_heads(_affine(x, Wk, bk))                   # (B, H, n, D) new keys ...
    v_new = mha._split_heads(_affine(x, Wv, bv))                   # ... and values
    n, t = x.shape[1], cache.length                                # new positions t-n .. t-1
    pos = getattr(mha, "positional", None)                         # positions inside attention (optional)
    if isinstance(pos, RotaryEmbedding):   # RoPE: rotate the new q and k once; the cache holds rotated keys
        cos, sin = pos.tables(n, t - n, q.dtype)
        q, k_new = apply_rotary(q, cos, sin), apply_rotary(k_new, cos, sin)
    K, V = cache.write(layer, k_new, v_new)                        # (B, H, t, D): all so far
    bias = None
    if pos is not None and not isinstance(pos, RotaryEmbedding):  # ALiBi / relative: the new rows' score bias
        q, _, bias, _ = positions_forward(pos, q, K)
    ctx, attn = scaled_dot_product_attention(q, K, V, attn_mask=cache.key_mask(n), training=False, attn_bias=bias)
    out = _affine(mha._merge_heads(ctx), mha.out_proj.weight.data,
                  None if mha.out_proj.bias is None else mha.out_proj.bias.data)
    return out, attn.weights


def _cross_attention(mha, x, memory_kv, memory_mask):
    """Encoder-decoder attention of new positions ``x (B, n, E)`` to the cached ``(K, V)`` of
    the encoder output (computed once by :func:`_memory_keys_values`)."""
    (Wq, bq, _, _) = mha._projections()[0]
    q = mha._split_heads(_affine(x, Wq, bq))
    K, V = memory_kv
    ctx, attn = scaled_dot_product_attention(q, K, V, attn_mask=memory_mask, training=False)
    out = _affine(mha._merge_heads(ctx), mha.out_proj.weight.data,
                  None if mha.out_proj.bias is None else mha.out_proj.bias.data)
    return out, attn.weights


def _memory_keys_values(mha, memory):
    """``(K, V)`` ``(B, H, S, D)`` of the encoder output: the same at every decoding step."""
    _, (Wk, bk, _, _), (Wv, bv, _, _) = mha._projections()
    return mha._split_heads(_affine(memory, Wk, bk)), mha._split_heads(_affine(memory, Wv, bv))


def _encoder_layer_step(layer, x, cache, index):
    """A (pre- or post-norm) :class:`TransformerEncoderLayer` on new positions, causal, cached."""
    sa = lambda z: _cached_self_attention(layer.self_attn, z, cache, index)  # noqa: E731
    if layer.norm_first:
        out, w = sa(layer.norm1(x))
        h = x + out                                  # h = x + SA(LN1(x))
        return h + layer.ff(layer.norm2(h)), w       # out = h + FFN(LN2(h))
    out, w = sa(x)
    h = layer.norm1(x + out)                         # h = LN1(x + SA(x))
    return layer.norm2(h + layer.ff(h)), w           # out = LN2(h + FFN(h))


def _decoder_layer_step(layer, x, cache, index, memory_kv, memory_mask):
    """A :class:`TransformerDecoderLayer` on new positions: cached self-attention, cross-attention
    to the encoder's cached keys/values, FFN."""
    if layer.norm_first:
        sa, ws = _cached_self_attention(layer.self_attn, layer.norm1(x), cache, index)
        h1 = x + sa
        ca, wc = _cross_attention(layer.multihead_attn, layer.norm2(h1), memory_kv, memory_mask)
        h2 = h1 + ca
        return h2 + layer.ff(layer.norm3(h2)), ws, wc
    sa, ws = _cached_self_attention(layer.self_attn, x, cache, index)
    h1 = layer.norm1(x + sa)
    ca, wc = _cross_attention(layer.multihead_attn, h1, memory_kv, memory_mask)
    h2 = layer.norm2(h1 + ca)
    return layer.norm3(h2 + layer.ff(h2)), ws, wc


def _position_rows(pos_module, start, n):
    """Rows ``start .. start+n-1`` of a positional encoding (sinusoidal table or learned)."""
    if not hasattr(pos_module, "max_len"):   # positions inside the attention layers: nothing added here
        return 0.0
    if start + n > pos_module.max_len:
        raise ValueError(f"decoding: position {start + n - 1} exceeds the positional encoding's "
                         f"'max_len' {pos_module.max_len}")
    if hasattr(pos_module, "pe"):
        return pos_module.pe[start:start + n]
    return pos_module.weight.data[start:start + n]


class TransformerDecoderState:
    """Incremental decoding of an encoder-decoder :class:`~npattention.transformer.Transformer`.

    ``TransformerDecoderState(model, src (B, S), src_key_padding_mask=None, max_len=64,
    repeat=1)`` encodes the source once, computes each decoder layer's cross-attention keys
    and values of the encoder output once, and allocates a :class:`KVCache` for
    ``max_len`` target tokens.  ``repeat=k`` copies every source ``k`` times (rows
    ``b*k .. b*k+k-1``), for beam search.

    ``step(tokens (N,) or (N, n)) -> logits (N, n, V)`` feeds the next target tokens (the
    first call gets ``<sos>``); it is ``model.decode(all tokens so far, memory)[:, -n:]``
    computed with the cache.  ``<pad>`` tokens (rows that already finished) are masked as
    keys, as in ``model.decode``.  ``reorder(index)`` keeps batch rows ``index``.
    ``self_weights``/``cross_weights``: per layer, the last step's attention weights.
    """

    def __init__(self, model, src, src_key_padding_mask=None, max_len=64, repeat=1):
        where = "TransformerDecoderState"
        check_array(src, "src", where, shape=(None, None), dtype="int")
        check_positive_int(max_len, "max_len", where)
        check_positive_int(repeat, "repeat", where)
        self.model = model
        if src_key_padding_mask is None:
            src_key_padding_mask = src == model.pad_idx
        memory = model.encode(src, src_key_padding_mask)                   # (B, S, d), once
        if repeat > 1:
            memory = xp.repeat(memory, repeat, axis=0)
            src_key_padding_mask = xp.repeat(src_key_padding_mask, repeat, axis=0)
        self.memory_mask = src_key_padding_mask[:, None, None, :]          # (N, 1, 1, S)
        self.memory_kv = [_memory_keys_values(layer.multihead_attn, memory) for layer in model.decoder.layers]
        mha = model.decoder.layers[0].self_attn
        self.cache = KVCache(len(model.decoder.layers), memory.shape[0], mha.num_heads, mha.head_dim,
                             max_len, dtype=memory.dtype)
        self.self_weights = self.cross_weights = None

    def step(self, tokens):
        model = self.model
        tokens = tokens[:, None] if tokens.ndim == 1 else tokens
        n = tokens.shape[1]
        start = self.cache.length
        # y = PE(E_tgt[tgt] * sqrt(d)), only the new rows
        x = model.tgt_embed(tokens) * math.sqrt(model.d_model)
        rows = _position_rows(model.tgt_pos, start, n)
        x = x + (rows.astype(x.dtype) if hasattr(rows, "astype") else rows)
        self.cache.extend(tokens == model.pad_idx)
        self.self_weights, self.cross_weights = [], []
        for i, layer in enumerate(model.decoder.layers):
            x, ws, wc = _decoder_layer_step(layer, x, self.cache, i, self.memory_kv[i], self.memory_mask)
            self.self_weights.append(ws)
            self.cross_weights.append(wc)
        if model.decoder.norm is not None:
            x = model.decoder.norm(x)
        return model.generator(x)                                          # (N, n, V)

    def reorder(self, index):
        self.cache.reorder(index)
        self.memory_kv = [(K[index], V[index]) for K, V in self.memory_kv]
        self.memory_mask = self.memory_mask[index]


class GPTState:
    """Incremental decoding of a decoder-only :class:`~npattention.gpt.GPT`.

    ``GPTState(model, batch_size, max_len)``; ``step(tokens (N,) or (N, n)) -> logits
    (N, n, V)`` equals ``model(all tokens so far)[:, -n:]`` (with the model's padding rule:
    ``<pad>`` tokens are masked keys and do not advance the position, so left-padded
    prompts work).  The first step usually feeds the whole prompt (prefill), the next ones
    one token each.  ``reorder(index)`` keeps batch rows ``index``.
    """

    def __init__(self, model, batch_size, max_len=None):
        where = "GPTState"
        max_len = model.block_size if max_len is None else check_positive_int(max_len, "max_len", where)
        if max_len > model.block_size:
            raise ValueError(f"{where}: 'max_len' {max_len} exceeds the model's 'block_size' {model.block_size}")
        self.model = model
        mha = model.blocks[0].self_attn
        self.cache = KVCache(len(model.blocks), batch_size, mha.num_heads, mha.head_dim, max_len,
                             dtype=model.wte.weight.data.dtype)
        self.num_real = xp.zeros(batch_size, dtype=xp.int64)   # real (non-pad) tokens seen per row
        self.weights = None

    def step(self, tokens):
        model = self.model
        tokens = tokens[:, None] if tokens.ndim == 1 else tokens
        pad = tokens == model.pad_idx if model.pad_idx is not None else xp.zeros(tokens.shape, dtype=bool)
        # positions as in GPT.position_ids: max(cumsum(not pad) - 1, 0), continued from the cache
        seen = self.num_real[:, None] + xp.cumsum(~pad, axis=1)
        pos = xp.maximum(seen - 1, 0)
        self.num_real = seen[:, -1]
        x = model.wte(tokens) + model.position_rows(pos)                 # x = E[idx] + P[pos]
        self.cache.extend(pad)
        self.weights = []
        for i, block in enumerate(model.blocks):
            x, w = _encoder_layer_step(block, x, self.cache, i)
            self.weights.append(w)
        return model.head(model.ln_f(x)) if model.tie_weights else model.lm_head(model.ln_f(x))

    def reorder(self, index):
        self.cache.reorder(index)
        self.num_real = self.num_real[index]


class _eval_mode:
    """``with _eval_mode(model):`` no dropout inside, the model's mode restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def greedy_search(model, src, max_len, src_key_padding_mask=None, sos_idx=Vocab.SOS, eos_idx=Vocab.EOS,
                  use_cache=True):
    """:func:`npattention.transformer.greedy_decode` with a KV cache (``use_cache=False``: the
    original, which recomputes the prefix).  Same output: ``(B, L)`` ids without ``<sos>``,
    ``<eos>`` then ``<pad>`` after each row ends."""
    if not use_cache:
        from .transformer import greedy_decode
        return greedy_decode(model, src, max_len, src_key_padding_mask, sos_idx, eos_idx)
    check_array(src, "src", "greedy_search", shape=(None, None), dtype="int")
    check_positive_int(max_len, "max_len", "greedy_search")
    with _eval_mode(model):
        state = TransformerDecoderState(model, src, src_key_padding_mask, max_len=max_len)
        B = src.shape[0]
        token = xp.full(B, sos_idx, dtype=xp.int64)
        finished = xp.zeros(B, dtype=bool)
        out = []
        for _ in range(max_len):   # one new token per step for every row
            logits = state.step(token)[:, -1]
            token = xp.where(finished, model.pad_idx, xp.argmax(logits, axis=-1)).astype(xp.int64)
            out.append(token)
            finished = finished | (token == eos_idx)
            if bool(finished.all()):
                break
        return xp.stack(out, axis=1)


# =============================================================================== 2. sampling
def _check_logits(logits, where):
    return check_array(logits, "logits", where, shape=(..., None))


def top_k_filter(logits, k):
    """Logits with every entry outside the ``k`` largest of its row set to ``-inf``.

    Ties at the k-th value are all kept (so a row may keep more than ``k`` when values tie).
    ``k >= V`` keeps everything.
    """
    _check_logits(logits, "top_k_filter")
    check_positive_int(k, "k", "top_k_filter")
    V = logits.shape[-1]
    if k >= V:
        return logits.copy()
    kth = xp.partition(logits, V - k, axis=-1)[..., V - k:V - k + 1]   # the k-th largest, (..., 1)
    return xp.where(logits < kth, -xp.inf, logits)


def top_p_filter(logits, p):
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``.

    Sort the probabilities in decreasing order, take the cumulative sum ``c``; token ``i``
    (in sorted order) is kept when the mass *before* it, ``c_i - p_i``, is below ``p``.  The
    most likely token is always kept.  ``p = 1`` keeps everything.
    """
    _check_logits(logits, "top_p_filter")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p_filter: 'p' must be a float in (0, 1], got {p!r}")
    probs = softmax(logits, axis=-1)
    order = xp.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = xp.take_along_axis(probs, order, axis=-1)
    mass_before = xp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep = xp.zeros(logits.shape, dtype=bool)
    xp.put_along_axis(keep, order, keep_sorted, axis=-1)
    return xp.where(keep, logits, -xp.inf)


def sampling_distribution(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution a sampler draws the next token from: ``softmax(filtered logits / T)``.

    ``logits (..., V)``.  Order: divide by ``temperature`` (``T < 1`` sharpens, ``T > 1``
    flattens), keep the ``top_k`` largest, then the nucleus of mass ``top_p``, renormalise.
    ``temperature=0`` is greedy: all mass on the argmax.  Returns probabilities ``(..., V)``.
    """
    where = "sampling_distribution"
    _check_logits(logits, where)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise ValueError(f"{where}: 'temperature' must be a float >= 0, got {temperature!r}")
    if temperature == 0:
        return xp.eye(logits.shape[-1], dtype=logits.dtype)[xp.argmax(logits, axis=-1)]
    if top_k is not None:
        check_positive_int(top_k, "top_k", where)
    if top_p is not None and (not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1):
        raise ValueError(f"{where}: 'top_p' must be a float in (0, 1], got {top_p!r}")
    z = logits / temperature
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    return softmax(z, axis=-1, mask=xp.isneginf(z))


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row of ``logits (N, V)`` from :func:`sampling_distribution`.

    ``generator``: a :class:`npattention.backend.Generator` (seeded) or an int seed; default
    the global one.  Inverse-CDF sampling: ``u ~ U(0, 1)``, the token is the first index
    whose cumulative probability exceeds ``u``.  Returns ``(N,)`` int64.
    """
    probs = sampling_distribution(logits, temperature, top_k, top_p)
    gen = Generator(generator) if isinstance(generator, int) else (generator or get_rng())
    u = gen.random((probs.shape[0], 1), dtype=probs.dtype)
    cdf = xp.cumsum(probs, axis=-1)
    token = (cdf <= u).sum(axis=-1)                     # first index with cdf > u
    # guard against u above the last cdf value by rounding: never pick a zero-probability token
    last = probs.shape[-1] - 1 - xp.argmax(probs[:, ::-1] > 0, axis=-1)
    return xp.minimum(token, last).astype(xp.int64)


def _left_pad(prompts, pad_idx):
    """A list of 1-D id sequences -> ``(B, T)`` left-padded with ``pad_idx``."""
    rows = [list(map(int, to_numpy(p).reshape(-1))) if not isinstance(p, list) else list(p) for p in prompts]
    T = max(len(r) for r in rows)
    if min(len(r) for r in rows) < T and pad_idx is None:
        raise ValueError("generate: prompts of different lengths need a model with a 'pad_idx'")
    return xp.asarray([[pad_idx] * (T - len(r)) + r for r in rows], dtype=xp.int64)


def generate(model, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
             eos_idx=None, use_cache=True, return_logits=False):
    """Continue prompts with a :class:`~npattention.gpt.GPT`, one token at a time.

    ``prompt``: ``(B, T)`` int ids (rows of different lengths left-padded with
    ``model.pad_idx``) or a list of 1-D id sequences (padded here).  Each step draws the
    next token with :func:`sample` (``temperature=0``: greedy).  ``eos_idx``: a row that
    produced it gets ``<pad>`` afterwards; stops early when every row has.  ``use_cache``:
    the KV cache (:class:`GPTState`); False recomputes the whole sequence each step.
    ``seed``: int for reproducible draws (default: the global generator).

    Returns ``(B, T + L)`` ids (prompt then the ``L <= max_new_tokens`` new tokens), and
    with ``return_logits`` also the ``(B, L, V)`` logits each token was drawn from.
    """
    where = "generate"
    if isinstance(prompt, (list, tuple)):
        prompt = _left_pad(prompt, model.pad_idx)
    check_array(prompt, "prompt", where, shape=(None, None), dtype="int")
    check_positive_int(max_new_tokens, "max_new_tokens", where)
    if prompt.shape[1] + max_new_tokens > model.block_size:
        raise ValueError(f"{where}: prompt length {prompt.shape[1]} + 'max_new_tokens' {max_new_tokens} "
                         f"exceeds the model's 'block_size' {model.block_size}")
    gen = Generator(seed) if seed is not None else get_rng()
    B = prompt.shape[0]
    ids, all_logits = prompt, []
    finished = xp.zeros(B, dtype=bool)
    with _eval_mode(model):
        state = GPTState(model, B, prompt.shape[1] + max_new_tokens) if use_cache else None
        new = prompt                                                    # first step: the whole prompt
        for _ in range(max_new_tokens):   # one new token per step for every row
            logits = (state.step(new) if use_cache else model(ids))[:, -1]     # (B, V)
            token = sample(logits, temperature, top_k, top_p, generator=gen)
            if eos_idx is not None:
                token = xp.where(finished, model.pad_idx, token)
                finished = finished | (token == eos_idx)
            ids = xp.concatenate([ids, token[:, None]], axis=1)
            all_logits.append(logits)
            new = token
            if eos_idx is not None and bool(finished.all()):
                break
    return (ids, xp.stack(all_logits, axis=1)) if return_logits else ids


# =============================================================================== 3. beam search
@dataclass
class BeamSearchResult:
    """What :func:`beam_search` returns.

    ``tokens`` ``(B, L)``: the best hypothesis per source (without ``<sos>``; ``<eos>`` if it
    ended, then ``<pad>``); ``scores`` ``(B,)``: its score ``log p / lp(length)``;
    ``hypotheses``: per source, the finished hypotheses ``(score, log_prob, token list)``
    best first; ``trace``: per step, ``(parents (B, k), tokens (B, k), log_probs (B, k),
    ended)`` -- the live beams after the step (host arrays; beam ``j`` extends beam
    ``parents[b, j]`` of the step before) and ``ended[b]``, a list of ``(parent, log_prob)``
    of the beams that emitted ``<eos>`` at this step -- for drawing the search tree.
    """

    tokens: object
    scores: object
    hypotheses: list
    trace: list = field(default_factory=list)


def length_penalty(length, alpha):
    """``lp(L) = L^alpha``: scores are ``log p / lp``; ``alpha = 0`` is plain log-probability,
    larger ``alpha`` favours longer outputs (log-probabilities only fall as a hypothesis grows)."""
    return float(length) ** alpha


def beam_search(state, batch_size, beam_width, max_len, sos_idx=Vocab.SOS, eos_idx=Vocab.EOS,
                pad_idx=Vocab.PAD, alpha=0.0, num_return=1, prompt=None):
    """Batched beam search over any decoder ``state`` with ``step(tokens (B*k,)) -> logits
    (B*k, 1, V)`` and ``reorder(index)``, built for ``B * k`` rows (row ``b*k + j`` is beam
    ``j`` of source ``b``).

    Per step, for every source: expand each live beam by every token (total log-prob =
    beam's + ``log_softmax(logits)``), take the best ``2k`` candidates, move those ending
    in ``<eos>`` (if ranked in the first ``k``) to the finished list with score
    ``log p / lp(length)`` (the length counts the ``<eos>``), keep the best ``k`` others as
    the new beams and reorder the state to their parents.  A source is done when it has
    ``k`` finished hypotheses and no live beam can still beat the worst of them
    (log-probabilities only fall, so a beam's best possible final score is its log-prob
    over ``lp(max_len)``), or after ``max_len`` tokens (live beams are then finished
    without ``<eos>``).  Width 1 with ``alpha = 0`` is greedy decoding.

    The first step feeds ``<sos>`` to every row, or ``prompt`` ``(B, n)`` ids (each source's
    prompt to all of its beams; a decoder-only model's context).  The returned tokens and
    lengths count only what comes after it.

    Returns a :class:`BeamSearchResult`.
    """
    where = "beam_search"
    B, k = check_positive_int(batch_size, "batch_size", where), check_positive_int(beam_width, "beam_width", where)
    check_positive_int(max_len, "max_len", where)
    if not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"{where}: 'alpha' (length penalty exponent) must be >= 0, got {alpha!r}")
    # only beam 0 is live at the start (the others would repeat it)
    beam_lp = xp.full((B, k), -xp.inf)
    beam_lp[:, 0] = 0.0
    beam_tokens = [[[] for _ in range(k)] for _ in range(B)]      # host lists: the bookkeeping
    finished = [[] for _ in range(B)]                              # (score, log_prob, tokens)
    done = [False] * B
    trace = []
    token = xp.full(B * k, sos_idx, dtype=xp.int64) if prompt is None else xp.repeat(prompt, k, axis=0)
    lp_max = length_penalty(max_len, alpha)
    for _ in range(max_len):   # one token per step for every beam
        logp = log_softmax(state.step(token)[:, -1].astype(xp.float64))   # (B*k, V)
        V = logp.shape[-1]
        cand = (beam_lp[:, :, None] + logp.reshape(B, k, V)).reshape(B, k * V)
        top = xp.argsort(-cand, axis=-1, kind="stable")[:, :2 * k]         # best 2k of k*V
        top_lp = to_numpy(xp.take_along_axis(cand, top, axis=-1))
        top = to_numpy(top)
        parents, tokens, new_lp, ended = [], [], [], []
        for b in range(B):   # bookkeeping per source (a few Python ops per candidate)
            keep_p, keep_t, keep_lp = [], [], []
            ended.append([])
            if not done[b]:
                for rank, (c, lp_c) in enumerate(zip(top[b], top_lp[b])):
                    parent, tok = divmod(int(c), V)
                    if not math.isfinite(lp_c):
                        break
                    if tok == eos_idx:
                        if rank < k:   # an <eos> ranked below k would not have survived anyway
                            hyp = beam_tokens[b][parent] + [tok]
                            finished[b].append((lp_c / length_penalty(len(hyp), alpha), float(lp_c), hyp))
                            ended[b].append((parent, float(lp_c)))
                        continue
                    keep_p.append(parent)
                    keep_t.append(tok)
                    keep_lp.append(float(lp_c))
                    if len(keep_p) == k:
                        break
                finished[b].sort(key=lambda h: -h[0])
                del finished[b][k:]
                best_live = keep_lp[0] if keep_lp else -math.inf
                if len(finished[b]) == k and best_live / lp_max <= finished[b][-1][0]:
                    done[b] = True
            if done[b] or not keep_p:                       # nothing live: fill with dead beams
                done[b] = True
                keep_p, keep_t, keep_lp = [0] * k, [pad_idx] * k, [-math.inf] * k
            while len(keep_p) < k:
                keep_p.append(keep_p[0])
                keep_t.append(pad_idx)
                keep_lp.append(-math.inf)
            beam_tokens[b] = [beam_tokens[b][p] + [tk] for p, tk in zip(keep_p, keep_t)]
            parents.append(keep_p)
            tokens.append(keep_t)
            new_lp.append(keep_lp)
        parents_a = xp.asarray(parents, dtype=xp.int64)                  # (B, k)
        trace.append((to_numpy(parents_a), to_numpy(xp.asarray(tokens)), to_numpy(xp.asarray(new_lp)), ended))
        if all(done):
            break
        beam_lp = xp.asarray(new_lp)
        state.reorder((xp.arange(B)[:, None] * k + parents_a).reshape(-1))
        token = xp.asarray(tokens, dtype=xp.int64).reshape(-1)
    for b in range(B):   # out of steps: live beams count as (unfinished) hypotheses
        if not done[b]:
            for j in range(k):
                lp_j = float(to_numpy(beam_lp[b, j]))
                if math.isfinite(lp_j):
                    hyp = beam_tokens[b][j]
                    finished[b].append((lp_j / length_penalty(len(hyp), alpha), lp_j, hyp))
            finished[b].sort(key=lambda h: -h[0])
            del finished[b][k:]
    L = max(len(f[0][2]) for f in finished)
    out = [f[0][2] + [pad_idx] * (L - len(f[0][2])) for f in finished]
    scores = xp.asarray([f[0][0] for f in finished])
    return BeamSearchResult(xp.asarray(out, dtype=xp.int64), scores, [f[:num_return] for f in finished], trace)


def beam_search_transformer(model, src, max_len, beam_width=4, alpha=0.0, src_key_padding_mask=None,
                            sos_idx=Vocab.SOS, eos_idx=Vocab.EOS, use_cache=True, num_return=1):
    """Beam search for an encoder-decoder :class:`~npattention.transformer.Transformer`.

    ``src (B, S)`` source ids; every source gets ``beam_width`` beams, all decoded as one
    batch of ``B * k`` rows with the KV cache (``use_cache=False`` recomputes the prefix
    every step; same result).  Returns a :class:`BeamSearchResult`; ``.tokens`` has the
    format of :func:`~npattention.transformer.greedy_decode`.
    """
    check_array(src, "src", "beam_search_transformer", shape=(None, None), dtype="int")
    check_positive_int(beam_width, "beam_width", "beam_search_transformer")
    with _eval_mode(model):
        if use_cache:
            state = TransformerDecoderState(model, src, src_key_padding_mask, max_len=max_len, repeat=beam_width)
        else:
            state = _RecomputeTransformerState(model, src, src_key_padding_mask, beam_width)
        return beam_search(state, src.shape[0], beam_width, max_len, sos_idx, eos_idx, model.pad_idx, alpha,
                           num_return)


def beam_search_gpt(model, prompt, max_new_tokens, beam_width=4, alpha=0.0, eos_idx=None, num_return=1):
    """Beam search continuing ``prompt (B, n)`` with a :class:`~npattention.gpt.GPT` (KV cache).

    ``eos_idx`` ends a hypothesis (e.g. the id of ``"\\n"`` for line-by-line text; None:
    every hypothesis runs ``max_new_tokens``).  Returns a :class:`BeamSearchResult` whose
    tokens are the continuations (without the prompt).
    """
    check_array(prompt, "prompt", "beam_search_gpt", shape=(None, None), dtype="int")
    check_positive_int(beam_width, "beam_width", "beam_search_gpt")
    B, n = prompt.shape
    if n + max_new_tokens > model.block_size:
        raise ValueError(f"beam_search_gpt: prompt length {n} + 'max_new_tokens' {max_new_tokens} exceeds the "
                         f"model's 'block_size' {model.block_size}")
    pad = model.pad_idx if model.pad_idx is not None else 0
    with _eval_mode(model):
        state = GPTState(model, B * beam_width, n + max_new_tokens)
        return beam_search(state, B, beam_width, max_new_tokens, eos_idx=-1 if eos_idx is None else eos_idx,
                           pad_idx=pad, alpha=alpha, num_return=num_return, prompt=prompt)


class Seq2SeqDecoderState:
    """Step-by-step decoding of an RNN :class:`~npattention.seq2seq.Seq2Seq` (any attention),
    in the ``step``/``reorder`` form of :func:`beam_search`.

    ``Seq2SeqDecoderState(model, src (B, S), src_lengths=None, repeat=1)`` runs the encoder
    once and the decoder's ``start`` (what is computed once per source, e.g. Bahdanau's
    projected keys); ``repeat=k`` copies every source ``k`` times for the beams.  The state
    carried from step to step is the RNN's hidden state ``(h,)`` or ``(h, c)``: no cache is
    needed, the recurrence *is* the summary of the prefix.  ``step(tokens (N,)) -> logits
    (N, 1, V)``; ``reorder(index)`` picks the hidden states (and memory rows) of the parents.
    ``weights``: the last step's attention weights ``(N, S)`` (None without attention).
    """

    def __init__(self, model, src, src_lengths=None, repeat=1):
        from .seq2seq import select_rows

        check_array(src, "src", "Seq2SeqDecoderState", shape=(None, None), dtype="int")
        check_positive_int(repeat, "repeat", "Seq2SeqDecoderState")
        self._select = select_rows
        self.decoder = model.decoder
        enc_out, enc_state, mask = model._encode(src, src_lengths)
        memory, state = model.decoder.start(enc_out, *enc_state, src_mask=mask)
        rows = xp.repeat(xp.arange(src.shape[0]), repeat)
        self.memory, self.state = select_rows(memory, rows), select_rows(state, rows)
        self.weights = None

    def step(self, tokens):
        tokens = tokens.reshape(-1) if tokens.ndim == 2 and tokens.shape[1] == 1 else tokens
        logits, self.state, self.weights = self.decoder.step(tokens, self.state, self.memory)
        return logits[:, None]

    def reorder(self, index):
        self.state = self._select(self.state, index)
        self.memory = self._select(self.memory, index)


def beam_search_seq2seq(model, src, src_lengths=None, max_len=20, beam_width=4, alpha=0.0, sos_idx=Vocab.SOS,
                        eos_idx=Vocab.EOS, pad_idx=Vocab.PAD, num_return=1):
    """Beam search for an RNN :class:`~npattention.seq2seq.Seq2Seq` (Bahdanau, Luong, location
    or no attention): every source gets ``beam_width`` beams, decoded as one batch.  Returns a
    :class:`BeamSearchResult` (tokens: ``<eos>`` then ``<pad>`` after each output).  Width 1
    gives :meth:`Seq2Seq.greedy_decode`'s tokens (which repeats ``<eos>`` instead of ``<pad>``)."""
    check_positive_int(beam_width, "beam_width", "beam_search_seq2seq")
    with _eval_mode(model):
        state = Seq2SeqDecoderState(model, src, src_lengths, repeat=beam_width)
        return beam_search(state, src.shape[0], beam_width, max_len, sos_idx, eos_idx, pad_idx, alpha, num_return)


class _RecomputeTransformerState:
    """The uncached decoder state: keeps the token prefix and re-runs ``model.decode`` on it."""

    def __init__(self, model, src, src_key_padding_mask, repeat):
        if src_key_padding_mask is None:
            src_key_padding_mask = src == model.pad_idx
        self.model = model
        self.memory = xp.repeat(model.encode(src, src_key_padding_mask), repeat, axis=0)
        self.mask = xp.repeat(src_key_padding_mask, repeat, axis=0)
        self.ys = xp.zeros((self.memory.shape[0], 0), dtype=xp.int64)

    def step(self, tokens):
        tokens = tokens[:, None] if tokens.ndim == 1 else tokens
        self.ys = xp.concatenate([self.ys, tokens], axis=1)
        return self.model.decode(self.ys, self.memory, memory_key_padding_mask=self.mask)[:, -tokens.shape[1]:]

    def reorder(self, index):
        self.ys, self.memory, self.mask = self.ys[index], self.memory[index], self.mask[index]
