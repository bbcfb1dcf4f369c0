"""T5's relative position bias (Raffel et al. 2020): a learned score bias per head and distance bucket.

Like ALiBi, the position enters only step 1 (score), as an additive bias that depends on
the offset ``j - i`` between key and query -- but the bias is *learned*: one table
``W_b`` of shape ``(num_buckets, H)``, one number per distance bucket and head::

    s_ij = q_i k_j^T / sqrt(D) + W_b[bucket(j - i), h]

Buckets (T5's rule): offsets ``|j - i| < n/2`` each get their own bucket (``n`` buckets
per direction); larger ones share logarithmically wider buckets up to ``max_distance``,
beyond which everything falls in the last bucket.  ``bidirectional=True`` gives keys
before and after the query separate halves of the table; ``False`` (a causal model)
uses every bucket for the past and puts all future offsets in bucket 0.

Backward: each table entry was copied into every ``(i, j)`` of its bucket, so its
gradient is the **sum** of the scores' gradients over those entries::

    dW_b[b, h] = sum_{i, j : bucket(j - i) = b} dS[h, i, j]     (a scatter-add)
"""
import math

from ..backend import add_at, get_rng, xp
from ..module import Module, Parameter
from ..validate import check_positive_int

__all__ = ["RelativePositionBias", "relative_position_bucket"]


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """T5's bucket index (int array, same shape) of each offset ``j - i`` in ``relative_position``."""
    rel = xp.asarray(relative_position)
    bucket = xp.zeros(rel.shape, dtype=xp.int64)
    if bidirectional:
        num_buckets //= 2
        bucket += (rel > 0).astype(xp.int64) * num_buckets   # keys after the query: upper half
        n = xp.abs(rel)
    else:
        n = xp.maximum(-rel, 0)                              # only the past counts; future -> 0
    max_exact = num_buckets // 2
    # log-spaced buckets for max_exact <= n < max_distance (n >= 1 there, so the log is defined)
    large = max_exact + (xp.log(xp.maximum(n, 1) / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(xp.int64)
    large = xp.minimum(large, num_buckets - 1)
    return bucket + xp.where(n < max_exact, n, large)


class RelativePositionBias(Module):
    """Learned relative position bias: ``forward(L, S, offset=0)`` -> bias ``(H, L, S)``.

    ``RelativePositionBias(num_heads, num_buckets=32, max_distance=128, bidirectional=True,
    init_std=0.02)``; parameter ``weight`` ``(num_buckets, H)``.  Queries sit at positions
    ``offset .. offset + L - 1``, keys at ``0 .. S - 1``.  ``backward(dbias (H, L, S))``
    scatter-adds into ``weight.grad`` and returns None (lengths are not differentiable).
    cache: the ``(L, S)`` bucket indices.
    """

    def __init__(self, num_heads, num_buckets=32, max_distance=128, bidirectional=True, init_std=0.02):
        where = "RelativePositionBias"
        self.num_heads = check_positive_int(num_heads, "num_heads", where)
        self.num_buckets = check_positive_int(num_buckets, "num_buckets", where)
        self.max_distance = check_positive_int(max_distance, "max_distance", where)
        self.bidirectional = bool(bidirectional)
        if num_buckets < (4 if bidirectional else 2) or max_distance <= num_buckets // (4 if bidirectional else 2):
            raise ValueError(f"{where}: need num_buckets >= {4 if bidirectional else 2} and max_distance > the exact "
                             f"range; got num_buckets={num_buckets}, max_distance={max_distance}")
        self.weight = Parameter(get_rng().normal((num_buckets, num_heads), scale=init_std))

    def buckets(self, L, S, offset=0):
        """``(L, S)`` bucket of every (query ``offset + i``, key ``j``) pair."""
        rel = xp.arange(S)[None, :] - xp.arange(offset, offset + L)[:, None]          # j - i
        return relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)

    def forward(self, L, S, offset=0):
        check_positive_int(L, "L", "RelativePositionBias")
        check_positive_int(S, "S", "RelativePositionBias")
        bucket = self.buckets(L, S, offset)
        self.cache = bucket
        return xp.moveaxis(self.weight.data[bucket], -1, 0)      # (L, S, H) lookup -> (H, L, S)

    def backward(self, grad_output):
        bucket = self.cache
        # bias[h, i, j] = W_b[bucket[i, j], h]  =>  W_b.grad[b, h] += sum over (i, j) in bucket b
        add_at(self.weight.grad, bucket.reshape(-1), grad_output.reshape(self.num_heads, -1).T)
        return None

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
                f"bidirectional={self.bidirectional}")
