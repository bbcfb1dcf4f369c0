"""Tiled (memory-efficient) attention: FlashAttention-2's forward and backward, in NumPy.

The pair::

    context, cache = tiled_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                     need_weights=False, training=True, attn_bias=None, block_size=128)
    dq, dk, dv = tiled_attention_backward(dout, cache)
    dq, dk, dv, dbias = tiled_attention_backward(dout, cache)     # with an additive bias

computes exactly what :func:`~npattention.attention.sdpa.scaled_dot_product_attention`
computes (same arguments, shapes, broadcasting and mask convention: boolean, **True =
masked out**; a query whose keys are all masked gets a zero row, never NaN; a float
``attn_mask`` or ``attn_bias`` is added to the scores), but never forms the ``(L, S)``
scores or weights.  The queries are cut into tiles of ``B_q`` rows and the keys/values
into tiles of ``B_k`` rows (``block_size = B`` or ``(B_q, B_k)``; the last tile may be
shorter); only ``(..., B_q, B_k)`` pieces of the scores exist at any time.  (An additive
bias is itself as large as the scores, and so is its gradient: it is sliced tile by tile,
but this path cannot make it smaller.)

**The loops over tiles are the lesson** and stay visible; everything inside a tile (batch,
heads, the tile's rows and columns) is vectorised.  Per query tile (``docs/tiled.md``)::

    m = -inf, l = 0, acc = 0                     running max, running sum, unnormalised context
    for each key/value tile j:
        s   = q_i k_j^T * scale   (masked: -inf)  1. score   (B_q, B_k)
        m'  = max(m, rowmax(s))                   2. align, online: new running maximum
        e   = exp(s - m')                            this tile's unnormalised weights
        l   = exp(m - m') l + rowsum(e)              old sum rescaled to the new maximum
        acc = exp(m - m') acc + e v_j             3. context, unnormalised
    context_i = acc / l,   lse_i = m + log l      lse: log-sum-exp of the row's scores

The cache holds the inputs (``q * scale``, ``k``, ``v``), the output and one number per
query row, ``lse`` (FlashAttention's ``L``; here ``L`` is the number of queries); the
backward recomputes each tile's weights as ``a = exp(s - lse)`` and uses
``delta = rowsum(dO * O)`` (FlashAttention's ``D``) in place of ``rowsum(a * da)``.

Differences from the default path, on purpose:

* ``need_weights=True`` is refused (the weights are exactly what this path never forms);
* dropout is supported, but its keep-mask comes from a counter-based hash of each entry's
  index and one seed drawn from :func:`npattention.backend.get_rng` (so the backward can
  regenerate any tile's mask, and the mask does not depend on the tile sizes); it is a
  different random draw from the default path's, so with dropout the two paths agree in
  distribution, not entry by entry.  :func:`tiled_dropout_mask` returns the whole mask for
  checking.
"""
import math
from dataclasses import dataclass

from ..backend import get_rng, sum_to_shape, xp
from ..validate import (broadcast_shapes, check_array, check_mask, check_positive_int, check_probability,
                        check_query_key_value)
from .sdpa import _check_bias  # one rule for a float bias, shared with the default path

__all__ = ["TiledAttentionCache", "tiled_attention", "tiled_attention_backward", "tiled_dropout_mask"]

_WHERE = "tiled_attention"


@dataclass
class TiledAttentionCache:
    """What :func:`tiled_attention_backward` needs: no ``(L, S)`` array among it."""

    query: object      # (..., L, E): query * scale
    key: object        # (..., S, E)
    value: object      # (..., S, Ev)
    context: object    # (..., L, Ev): the output O
    lse: object        # (..., L): log-sum-exp of each query's (unmasked) scores; -inf for a fully masked row
    attn_mask: object  # the caller's boolean mask (never a copy), or None
    attn_bias: object  # the caller's additive float bias (never a copy), or None
    bias_shape: object # the bias's shape as given (dbias gets it), or None
    is_causal: bool
    block_q: int       # B_q: query rows per tile
    block_k: int       # B_k: key/value rows per tile
    dropout_p: float   # 0.0 when no dropout was applied
    seed: object       # the dropout seed (int), or None
    scale: float


def _block_sizes(block_size, where=_WHERE):
    """``B`` -> ``(B, B)``; ``(B_q, B_k)`` as given; both positive ints."""
    if isinstance(block_size, (tuple, list)):
        if len(block_size) != 2:
            raise ValueError(f"{where}: 'block_size' must be a positive int or a pair (B_q, B_k), "
                             f"got {block_size!r}")
        return tuple(check_positive_int(b, "block_size", where) for b in block_size)
    b = check_positive_int(block_size, "block_size", where)
    return b, b


def _tile_index(x, i0, i1, j0, j1):
    """Index of tile ``[i0:i1) x [j0:j1)`` in a mask or bias ``(..., L or 1, S or 1)``:
    an axis of size 1 broadcasts and is not sliced."""
    return (Ellipsis, slice(i0, i1) if x.shape[-2] > 1 else slice(None),
            slice(j0, j1) if x.shape[-1] > 1 else slice(None))


def _tile_mask(attn_mask, is_causal, i0, i1, j0, j1):
    """The mask of tile ``[i0:i1) x [j0:j1)``, True = masked out, or None.

    The caller's mask is only sliced (a view); the causal part is built from the tile's
    indices, and only for a tile that straddles the diagonal (some key after some query).
    """
    mask = None if attn_mask is None else attn_mask[_tile_index(attn_mask, i0, i1, j0, j1)]
    if is_causal and j1 - 1 > i0:
        future = xp.arange(j0, j1)[None, :] > xp.arange(i0, i1)[:, None]   # key j after query i
        mask = future if mask is None else (mask | future)
    return mask


def _at_least_2d(x):
    """A mask or bias of fewer than 2 axes as ``(1, S)`` / ``(1, 1)``, so that tiles slice it alike."""
    return x if x is None or x.ndim >= 2 else x.reshape((1,) * (2 - x.ndim) + tuple(x.shape))


def _bias_tile(bias, i0, i1, j0, j1):
    return None if bias is None else bias[_tile_index(bias, i0, i1, j0, j1)]


def _above_diagonal(is_causal, i1, j0):
    """True when a causal tile ``[i0:i1) x [j0:j1)`` lies wholly above the diagonal:
    its first key comes after its last query, so every entry is masked and it is skipped."""
    return bool(is_causal) and j0 > i1 - 1


def _tile_scores(q_tile, k_tile, bias_tile, mask):
    """Step 1 on one tile: ``s = (q * scale) k^T (+ bias)``, masked entries set to -inf."""
    s = q_tile @ xp.swapaxes(k_tile, -1, -2)             # (..., B_q, B_k)
    if bias_tile is not None:
        s = s + bias_tile
    return s if mask is None else xp.where(mask, -xp.inf, s)


# splitmix64 constants: a good 64-bit hash of a counter (Steele, Lea & Flood, 2014)
_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _keep_tile(seed, lead, L, S, i0, i1, j0, j1, p):
    """Dropout keep-mask of one tile, ``lead + (i1-i0, j1-j0)``, True with probability ``1 - p``.

    Counter-based, like the Philox draws of GPU attention kernels: entry ``(n, i, j)`` of
    the full ``(..., L, S)`` grid gets the uniform number ``hash(seed, (n L + i) S + j)``.
    So any tile's mask can be regenerated in the backward, and the mask is the same
    whatever the tile sizes.
    """
    u64 = xp.uint64
    n = xp.arange(math.prod(lead), dtype=u64).reshape(tuple(lead) + (1, 1))
    rows = xp.arange(i0, i1, dtype=u64)[:, None]
    cols = xp.arange(j0, j1, dtype=u64)[None, :]
    z = ((n * u64(L) + rows) * u64(S) + cols + u64(1)) * u64(_GAMMA) + u64(seed)   # wraps mod 2^64
    z = (z ^ (z >> u64(30))) * u64(_MIX1)
    z = (z ^ (z >> u64(27))) * u64(_MIX2)
    z ^= z >> u64(31)
    uniform = (z >> u64(11)).astype(xp.float64) * 2.0 ** -53                     # top 53 bits -> [0, 1)
    return uniform >= p


def tiled_dropout_mask(cache):
    """The whole ``(..., L, S)`` keep-mask the tiled path used (None without dropout).

    For checking and teaching only: it allocates the ``(L, S)`` array the path avoids."""
    if cache.seed is None:
        return None
    lead = broadcast_shapes(cache.query.shape[:-2], cache.key.shape[:-2], cache.value.shape[:-2])
    L, S = cache.query.shape[-2], cache.key.shape[-2]
    return _keep_tile(cache.seed, lead, L, S, 0, L, 0, S, cache.dropout_p)


def tiled_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    need_weights=False, training=True, attn_bias=None, block_size=128):
    """Forward of ``softmax(q k^T * scale + bias, mask) @ v``, one tile at a time; returns ``(context, cache)``.

    Arguments as in :func:`~npattention.attention.sdpa.scaled_dot_product_attention`;
    ``block_size``: ``B`` or ``(B_q, B_k)``, rows per query tile and per key/value tile
    (any positive ints: they need not divide ``L`` or ``S``).
    cache: ``(q * scale, k, v, context, lse (..., L), mask, ...)`` -- see :class:`TiledAttentionCache`.
    """
    lead = check_query_key_value(query, key, value, _WHERE)
    L, S, Ev = query.shape[-2], key.shape[-2], value.shape[-1]
    if attn_mask is not None and getattr(attn_mask, "dtype", None) is not None and attn_mask.dtype.kind == "f":
        if attn_bias is not None:
            raise ValueError(f"{_WHERE}: got a float 'attn_mask' (an additive bias) and 'attn_bias'; pass one")
        attn_bias, attn_mask = attn_mask, None          # as in the default path (and PyTorch): a float mask is a bias
    check_mask(attn_mask, "attn_mask", _WHERE, tuple(lead) + (L, S))
    _check_bias(attn_bias, tuple(lead) + (L, S), _WHERE)
    bias_shape = None if attn_bias is None else tuple(attn_bias.shape)
    attn_mask, attn_bias = _at_least_2d(attn_mask), _at_least_2d(attn_bias)
    dropout_p = check_probability(dropout_p, "dropout_p", _WHERE)
    if need_weights:
        raise ValueError(f"{_WHERE}: need_weights=True asks for the (L, S) = {(L, S)} attention weights, which "
                         "the tiled path never forms; use scaled_dot_product_attention to get them")
    Bq, Bk = _block_sizes(block_size)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)   # Python float: no upcast
    dtype = xp.result_type(query.dtype, key.dtype, value.dtype)
    seed = int(get_rng().host.integers(2 ** 63)) if training and dropout_p > 0.0 else None

    query = query * scale                               # as in sdpa: scale the (L, E) queries, not the scores
    context = xp.empty(tuple(lead) + (L, Ev), dtype=dtype)
    lse = xp.empty(tuple(lead) + (L,), dtype=dtype)
    for i0 in range(0, L, Bq):                          # the lesson: loop over query tiles ...
        i1 = min(i0 + Bq, L)
        q_i = query[..., i0:i1, :]
        m = xp.full(tuple(lead) + (i1 - i0, 1), -xp.inf, dtype=dtype)    # running row maximum
        l = xp.zeros(tuple(lead) + (i1 - i0, 1), dtype=dtype)            # running sum of exp(s - m)
        acc = xp.zeros(tuple(lead) + (i1 - i0, Ev), dtype=dtype)         # running sum of exp(s - m) v
        for j0 in range(0, S, Bk):                      # ... and, inside, over key/value tiles
            j1 = min(j0 + Bk, S)
            if _above_diagonal(is_causal, i1, j0):
                break                                   # this tile and all later ones: every key in the future
            # 1. score: this tile of the scores only
            s = _tile_scores(q_i, key[..., j0:j1, :], _bias_tile(attn_bias, i0, i1, j0, j1),
                             _tile_mask(attn_mask, is_causal, i0, i1, j0, j1))
            # 2. align, online: raise the running maximum, rescale the sums kept so far to it
            m_new = xp.maximum(m, s.max(axis=-1, keepdims=True))
            shift = xp.where(xp.isfinite(m_new), m_new, 0.0)   # rows masked so far: m = -inf, all exps are 0
            e = xp.exp(s - shift)                       # (..., B_q, B_k) unnormalised weights; masked -> 0
            rescale = xp.exp(m - shift)                 # exp(m_old - m_new): 0 on a row's first unmasked tile
            l = rescale * l + e.sum(axis=-1, keepdims=True)
            if seed is not None:                        # dropout on the weights (not on the sum l)
                e = e * _keep_tile(seed, lead, L, S, i0, i1, j0, j1, dropout_p)
                e *= 1.0 / (1.0 - dropout_p)
            # 3. context, unnormalised: acc = sum_j exp(s_ij - m_i) v_j
            acc = rescale * acc + e @ value[..., j0:j1, :]
            m = m_new
        l_safe = xp.where(l == 0, 1.0, l)               # l = 0 only for a fully masked row (its acc is 0 too)
        context[..., i0:i1, :] = acc / l_safe           # normalise once, at the end
        lse[..., i0:i1] = (m + xp.log(l_safe))[..., 0]  # lse = m + log l (-inf for a fully masked row)

    cache = TiledAttentionCache(query, key, value, context, lse, attn_mask, attn_bias, bias_shape,
                                bool(is_causal), Bq, Bk, dropout_p if seed is not None else 0.0, seed, scale)
    return context, cache


def tiled_attention_backward(grad_output, cache):
    """Gradients ``(dq, dk, dv)`` from the gradient of the context ``(..., L, Ev)``;
    ``(dq, dk, dv, dbias)`` when the forward had an additive bias (``dbias = ds``, tile by tile).

    FlashAttention-2's order: an outer loop over key/value tiles (their ``dk``, ``dv`` are
    summed over the query tiles), an inner loop over query tiles (``dq`` accumulates)::

        delta = rowsum(dO * O)                 once, (..., L): equals rowsum(a * da)
        a   = exp(s - lse)                     the tile's weights, recomputed (a~: after dropout)
        dV += a~^T dO       da~ = dO V^T       (context = a~ V)
        da  = da~ * keep/(1-p)                 (dropout)
        ds  = a * (da - delta)                 (softmax)
        dQ += ds K * scale  dK += ds^T (Q * scale)   (scores = (Q * scale) K^T)
    """
    check_array(grad_output, "grad_output", "tiled_attention_backward", shape=tuple(cache.context.shape))
    q, k, v, out = cache.query, cache.key, cache.value, cache.context
    L, S = q.shape[-2], k.shape[-2]
    lead, Bq, Bk = tuple(out.shape[:-2]), cache.block_q, cache.block_k
    dtype = out.dtype
    # delta_i = sum_e dO_ie O_ie = sum_j a_ij da_ij (docs/tiled.md): an (L, Ev) product, not (L, S)
    delta = xp.sum(grad_output * out, axis=-1, keepdims=True)           # (..., L, 1)
    # exp(s - lse) with lse = -inf on a fully masked row would be exp(-inf + inf) = NaN:
    # shift those rows by +inf instead, so that all their recomputed weights are 0.
    lse = xp.where(xp.isneginf(cache.lse), xp.inf, cache.lse)[..., None]   # (..., L, 1)
    dq = xp.zeros(lead + (L, q.shape[-1]), dtype=dtype)
    dk = xp.zeros(lead + (S, k.shape[-1]), dtype=dtype)
    dv = xp.zeros(lead + (S, v.shape[-1]), dtype=dtype)
    bias = cache.attn_bias
    dbias = None if bias is None else xp.zeros(bias.shape, dtype=dtype)
    for j0 in range(0, S, Bk):                          # the lesson: outer loop over key/value tiles ...
        j1 = min(j0 + Bk, S)
        k_j, v_j = k[..., j0:j1, :], v[..., j0:j1, :]
        dk_j, dv_j = dk[..., j0:j1, :], dv[..., j0:j1, :]     # views: accumulated in place
        for i0 in range(0, L, Bq):                      # ... inner loop over query tiles
            i1 = min(i0 + Bq, L)
            if _above_diagonal(cache.is_causal, i1, j0):
                continue                                # no query of this tile sees these keys
            q_i, do_i = q[..., i0:i1, :], grad_output[..., i0:i1, :]
            # recompute steps 1 and 2 from the saved lse: a = exp(s - lse) = softmax(s), exactly
            s = _tile_scores(q_i, k_j, _bias_tile(bias, i0, i1, j0, j1),
                             _tile_mask(cache.attn_mask, cache.is_causal, i0, i1, j0, j1))
            a = xp.exp(s - lse[..., i0:i1, :])          # (..., B_q, B_k) attention weights; masked -> 0
            a_drop = a
            if cache.seed is not None:                  # the same keep-mask as in the forward, regenerated
                keep = _keep_tile(cache.seed, lead, L, S, i0, i1, j0, j1, cache.dropout_p)
                a_drop = a * keep
                a_drop *= 1.0 / (1.0 - cache.dropout_p)
            # 3. context = a_drop @ v
            dv_j += xp.swapaxes(a_drop, -1, -2) @ do_i  # (..., B_k, Ev)
            da = do_i @ xp.swapaxes(v_j, -1, -2)        # (..., B_q, B_k), gradient of a_drop
            if cache.seed is not None:                  # dropout: only kept entries pass, scaled
                da *= keep
                da *= 1.0 / (1.0 - cache.dropout_p)
            # 2. softmax: ds = a * (da - rowsum(a * da)) = a * (da - delta); masked entries have a = 0
            ds = a * (da - delta[..., i0:i1, :])
            # 1. scores = (q * scale) k^T
            dq[..., i0:i1, :] += (ds @ k_j) * cache.scale
            dk_j += xp.swapaxes(ds, -1, -2) @ q_i        # the cache holds q * scale: no extra factor
            if bias is not None:                        # scores = ... + bias  =>  dbias = ds, summed where it broadcast
                tile = _tile_index(bias, i0, i1, j0, j1)
                dbias[tile] += sum_to_shape(ds, tuple(dbias[tile].shape))
    grads = (sum_to_shape(dq, tuple(q.shape)), sum_to_shape(dk, tuple(k.shape)), sum_to_shape(dv, tuple(v.shape)))
    return grads if dbias is None else grads + (dbias.reshape(cache.bias_shape),)
