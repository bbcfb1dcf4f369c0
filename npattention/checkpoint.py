"""Save and load training checkpoints as plain ``.npz`` files.

File layout (one NumPy ``.npz`` archive, readable with ``numpy.load(path, allow_pickle=False)``):

=========================  ==============================================================
``model/<name>``           every parameter and buffer of ``model.state_dict()``,
                           e.g. ``model/layers.0.weight``
``optim/<key>``            ``optimizer.state_dict()``: ``optim/step``, ``optim/lr``, ...
                           (numbers as 0-d arrays) and ``optim/state.<i>.<buffer>``
``schedule/<key>``         the learning-rate schedule's state (``last_step``, ``base_lr``)
``metadata``               a 0-d string array holding a JSON object: the keyword
                           arguments of :func:`save_checkpoint` and the format version
=========================  ==============================================================

Arrays are moved to the host with ``to_numpy`` before saving, so a checkpoint written
under CuPy is plain NumPy on disk and loads under either backend.  Nothing is pickled:
loading uses ``allow_pickle=False``, so opening a checkpoint cannot run code.

Saving is atomic: the archive is written to a temporary file in the same folder, flushed
to disk, and only then renamed over ``path`` with ``os.replace``.  A crash (or Ctrl-C)
during saving leaves the previous checkpoint untouched.
"""
import json
import os
import tempfile

from .backend import np, to_numpy
from .module import Module

FORMAT = "npattention-checkpoint"
VERSION = 1


def _check_model(model, where):
    if not isinstance(model, Module):
        raise TypeError(f"{where}: 'model' must be a npattention Module, got {type(model).__name__}")


def save_checkpoint(path, model, optimizer=None, scheduler=None, **metadata):
    """Write ``model`` (and optionally ``optimizer``, ``scheduler``) to ``path`` atomically.

    ``metadata``: JSON-serialisable keyword arguments stored with the arrays, e.g.
    ``epoch=3, val_accuracy=0.97, config={"d_model": 32}``; :func:`load_checkpoint`
    returns them.  ``path`` is used as given (no ``.npz`` is appended).  Returns ``path``.
    """
    _check_model(model, "save_checkpoint")
    try:
        meta_json = json.dumps({"format": FORMAT, "version": VERSION, "metadata": metadata})
    except TypeError as err:
        raise TypeError(f"save_checkpoint: metadata must be JSON-serialisable ({err})") from None
    arrays = {f"model/{k}": to_numpy(v) for k, v in model.state_dict().items()}
    for prefix, obj in (("optim", optimizer), ("schedule", scheduler)):
        if obj is not None:
            arrays.update({f"{prefix}/{k}": to_numpy(v) for k, v in obj.state_dict().items()})
    arrays["metadata"] = np.array(meta_json)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)  # atomic on POSIX and Windows: old file or new file, never half
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _section(arrays, prefix):
    n = len(prefix) + 1
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def load_checkpoint(path, model, optimizer=None, scheduler=None, strict=True):
    """Load a file written by :func:`save_checkpoint` into ``model`` (and ``optimizer``, ``scheduler``).

    Returns the metadata dict given to ``save_checkpoint``.  Errors name the file and
    list every missing or unexpected key and every wrong shape (``strict=False`` lets
    the model ignore missing/unexpected keys, as ``Module.load_state_dict``).  Asking for
    an optimiser or schedule state the file does not hold is an error.
    """
    _check_model(model, "load_checkpoint")
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if "metadata" not in arrays:
        raise ValueError(f"load_checkpoint: {path} is not an npattention checkpoint (no 'metadata' entry)")
    meta = json.loads(str(arrays["metadata"]))
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"load_checkpoint: {path} has format {meta.get('format')!r} version "
                         f"{meta.get('version')!r}; this npattention reads {FORMAT!r} up to version {VERSION}")
    targets = [("model", model)]
    for prefix, obj in (("optim", optimizer), ("schedule", scheduler)):
        if obj is not None:
            if not _section(arrays, prefix):
                raise KeyError(f"load_checkpoint: {path} holds no '{prefix}/' entries, but "
                               f"{type(obj).__name__} state was requested")
            targets.append((prefix, obj))
    for prefix, obj in targets:
        state = _section(arrays, prefix)  # numbers come back as 0-d arrays; int()/float() read them
        try:
            obj.load_state_dict(state, strict=strict) if prefix == "model" else obj.load_state_dict(state)
        except (KeyError, ValueError) as err:
            # same error type, message prefixed with the file and the section
            raise type(err)(f"{path} [{prefix}/]: {err.args[0]}") from None
    return meta["metadata"]
