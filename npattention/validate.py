"""Input checks that turn bad input into one clear error.

Every public forward checks its arguments with :func:`check_array` so that a user sees
``ValueError: MultiheadAttention: 'key' must have shape (B, S, 16), got (2, 5, 8)``
instead of a broadcast error three calls deep.

Shapes are written as tuples whose entries are

* an ``int`` -- that exact size;
* a ``str`` -- a named size (``"B"``, ``"T"``); the same name must have the same size
  in every array checked with the same ``dims`` dictionary;
* ``None`` -- any size;
* a leading ``...`` -- any number of leading axes.
"""
import contextlib

from .backend import np, xp


#: named sizes that are sequence lengths: they may not be 0 (docs/contract.md, "Empty inputs")
_SEQUENCE_DIMS = ("T", "S", "L", "Tq")


def _describe(pattern):
    return "(" + ", ".join("..." if p is Ellipsis else ("*" if p is None else str(p)) for p in pattern) + ")"


_KINDS = {"float": "f", "int": "iu", "bool": "b"}


def check_array(x, name, where, shape=None, dtype="float", dims=None):
    """Check one array argument; return it unchanged.

    ``where``: the caller, e.g. ``"Linear"``.  ``dtype``: ``"float"``, ``"int"``,
    ``"bool"`` or ``None`` (anything).  ``dims``: a dict shared between calls so that
    named sizes must agree across arguments; filled in as sizes are seen.

    (Called by every forward: the passing case is one short loop over the pattern, about a
    microsecond; the messages are built only on failure.)
    """
    if not isinstance(x, xp.ndarray):
        raise TypeError(
            f"{where}: {name!r} must be an array of the active backend ({xp.__name__}.ndarray), "
            f"got {type(x).__name__}"
        )
    if dtype is not None and x.dtype.kind not in _KINDS[dtype]:
        hint = " (convert with .astype(float) or use the integer-id input)" if dtype == "float" else ""
        raise TypeError(f"{where}: {name!r} must be a {dtype} array, got dtype {x.dtype}{hint}")
    if shape is None:
        return x
    pattern = tuple(shape)
    lead = bool(pattern) and pattern[0] is Ellipsis
    fixed = pattern[1:] if lead else pattern
    ok = x.ndim >= len(fixed) if lead else x.ndim == len(fixed)
    empty = None
    if ok:
        dims = {} if dims is None else dims
        for want, got in zip(fixed, x.shape[x.ndim - len(fixed):]):
            if want is None or want == got:
                continue
            if isinstance(want, str):
                if dims.setdefault(want, got) != got:
                    ok = False
                elif got == 0 and want in _SEQUENCE_DIMS and empty is None:
                    empty = want
            else:
                ok = False
    if ok and empty is not None:
        raise ValueError(f"{where}: {name!r} has {empty} = 0 positions (shape {tuple(x.shape)}); a sequence "
                         "needs at least one step (an empty batch, B = 0, is fine)")
    if not ok:
        named = ""
        if dims:
            named = " with " + ", ".join(f"{k}={v}" for k, v in dims.items() if isinstance(k, str))
        raise ValueError(
            f"{where}: {name!r} must have shape {_describe(pattern)}{named}, got {tuple(x.shape)}"
        )
    return x


def check_positive_int(value, name, where):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: {name!r} must be a positive int, got {value!r}")
    return value


def check_probability(value, name, where):
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{where}: {name!r} must be a float in [0, 1), got {value!r}")
    return float(value)


def broadcast_shapes(*shapes):
    """The broadcast of several shapes (pure shape arithmetic, done on the host, so it
    works the same under CuPy); raises ``ValueError`` when they do not broadcast."""
    return tuple(np.broadcast_shapes(*(tuple(s) for s in shapes)))


def check_query_key_value(query, key, value, where, feature="E"):
    """Check ``query (..., L, F)``, ``key (..., S, F)``, ``value (..., S, Ev)`` (``F`` named ``feature``)
    and return their broadcast leading shape ``...`` (batch, heads)."""
    check_array(query, "query", where, shape=(..., "L", feature))
    dims = {feature: query.shape[-1]}
    check_array(key, "key", where, shape=(..., "S", feature), dims=dims)
    check_array(value, "value", where, shape=(..., "S", None), dims=dims)
    try:
        return broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except ValueError:
        raise ValueError(f"{where}: the leading axes of query {tuple(query.shape)}, key {tuple(key.shape)} "
                         f"and value {tuple(value.shape)} do not broadcast") from None


def check_mask(mask, name, where, target_shape):
    """A boolean mask (True = masked out) that broadcasts to ``target_shape`` without
    growing it; ``None`` passes through."""
    if mask is None:
        return None
    kind = getattr(getattr(mask, "dtype", None), "kind", None)
    if kind in ("f", "i", "u"):
        hint = ("a float mask is an additive bias (0 / -inf): add it to the scores, or pass it where an additive "
                "mask or bias is accepted" if kind == "f" else "convert it with mask.astype(bool)")
        raise TypeError(f"{where}: {name!r} must be a bool array (True = masked out), got dtype {mask.dtype}; {hint}")
    check_array(mask, name, where, dtype="bool")
    if tuple(mask.shape) == tuple(target_shape):  # the common case, without the broadcast arithmetic
        return mask
    try:
        fits = broadcast_shapes(tuple(mask.shape), tuple(target_shape)) == tuple(target_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: {name!r} of shape {tuple(mask.shape)} does not broadcast to the "
            f"scores' shape {tuple(target_shape)}"
        )
    return mask


@contextlib.contextmanager
def renamed_args(where, inner, **names):
    """Report argument errors of an inner call under the caller's names.

    ``with renamed_args("SelfAttention", "MultiheadAttention", query="x", key="x", value="x"):``
    turns ``MultiheadAttention: 'query' must have shape ...`` raised inside into
    ``SelfAttention: 'x' must have shape ...``.  Only ``ValueError``/``TypeError`` whose message
    starts with ``inner + ":"`` (the inner module's own argument checks) are rewritten.
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        msg = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else None
        if msg is None or not msg.startswith(inner + ":"):
            raise
        msg = where + msg[len(inner):]
        for old, new in names.items():
            msg = msg.replace(f"'{old}'", f"'{new}'")
        raise type(err)(msg) from None
