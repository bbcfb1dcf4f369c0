"""The retrieval task of the hard-attention demo: find the key that a disguised query points at.

* each example has ``n_keys`` random unit keys ``k_j`` in ``R^dim`` and, at each key,
  a value = the one-hot of a label ``y_j`` (a random permutation of ``0..n_keys-1``);
* the query is a *disguised* copy of one key, ``q = M k_t + noise`` with a fixed random
  matrix ``M`` (:func:`make_disguise`) that the model does not know;
* the answer is the label ``y_t`` found at the matching key.  Chance level: ``1 / n_keys``.

A bilinear score ``s_j = q^T W k_j`` solves it with ``W ~ M^{-T}`` (up to scale); training
it with soft and with hard attention is :mod:`npattention.attention.hard_demo`.
"""
from ..backend import asarray, xp

__all__ = ["make_disguise", "make_retrieval_batch"]


def make_disguise(gen, dim):
    """The fixed random ``(dim, dim)`` matrix ``M`` that disguises the queries (host array)."""
    return gen.host.normal(size=(dim, dim)) / dim ** 0.5


def make_retrieval_batch(gen, M, batch, n_keys, noise=0.1):
    """One batch: ``(query (B,1,D), keys (B,n,D), values (B,n,n) one-hot, target labels (B,))``.

    ``gen``: a :class:`~npattention.backend.Generator` (data drawn on the host, then moved);
    ``M``: ``(D, D)``, from :func:`make_disguise`.
    """
    host = gen.host
    dim = M.shape[0]
    keys = asarray(host.normal(size=(batch, n_keys, dim)), "float64")
    keys = keys / xp.sqrt(xp.sum(keys * keys, axis=-1, keepdims=True))
    labels = xp.argsort(asarray(host.random((batch, n_keys))), axis=1)  # a random permutation per row
    t = asarray(host.integers(0, n_keys, size=batch))
    rows = xp.arange(batch)
    noise_draw = asarray(host.normal(size=(batch, dim)), "float64")
    q = keys[rows, t] @ asarray(M, "float64").T + noise * noise_draw / dim ** 0.5
    values = (labels[..., None] == xp.arange(n_keys)).astype("float64")
    return q[:, None, :], keys, values, labels[rows, t]
