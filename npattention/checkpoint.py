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
during saving leaves the previous checkpoint untouched.  The file gets the usual
permissions (``0o666`` minus the umask, or those of the file it replaces); saving through a
symbolic link replaces the link's target, not the link.  The temporary file is named
``.<name>.<pid>.<random>.tmp``: an exception removes it at once, and one left by a killed
process (``kill -9``, power loss) is removed by the next save to the same path.

Loading is all-or-nothing: the file is read and the model, optimiser and schedule
states are all checked before any of them is written, so a failed load changes nothing.
A file that is not a checkpoint (truncated, corrupted, empty, text, ``.npy``, bad
metadata) raises ``ValueError`` naming the path.
"""
import glob
import json
import os
import tempfile
import zipfile

from .backend import np, to_numpy
from .module import Module
from .optim import LRSchedule, Optimizer

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

    path = _check_path(path, "save_checkpoint")
    target = os.path.realpath(path)  # through a symlink: replace the file it points to
    if os.path.isdir(target):
        raise IsADirectoryError(f"save_checkpoint: 'path' {path} is a directory; give a file name")
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(target)
    prefix = f".{os.path.basename(target)}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp, _file_mode(target))  # mkstemp makes 0o600; give the usual permissions
        os.replace(tmp, target)  # atomic on POSIX and Windows: old file or new file, never half
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _check_path(path, where):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{where}: 'path' must be a str or os.PathLike, got {type(path).__name__}") from None


def _file_mode(target):
    """The mode of the file being replaced, else 0o666 minus the umask (as open() gives)."""
    try:
        return os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_stale_temporaries(target):
    """Delete ``.<name>.<pid>.*.tmp`` files left by a process that no longer runs."""
    pattern = os.path.join(os.path.dirname(target), glob.escape(f".{os.path.basename(target)}.") + "*.tmp")
    for tmp in glob.glob(pattern):
        pid = os.path.basename(tmp)[len(os.path.basename(target)) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.remove(tmp)
            except OSError:
                pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True   # exists (another user's) or cannot tell: keep its file
    return True


def _read(path):
    """``{name: array}`` of the checkpoint at ``path`` and its metadata dict; a file that is
    not a readable npattention checkpoint raises ``ValueError`` naming the path."""
    def invalid(why):
        return ValueError(f"load_checkpoint: {path} is not a valid npattention checkpoint ({why})")

    if os.path.isdir(path):
        raise IsADirectoryError(f"load_checkpoint: 'path' {path} is a directory, not a checkpoint file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_checkpoint: no such file: {path}")
    if os.path.getsize(path) == 0:
        raise invalid("the file is empty")
    try:
        f = np.load(path, allow_pickle=False)
    except ValueError as err:   # a pickle, text, ...
        raise invalid("not a NumPy .npz archive: pickled or unrecognised data") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise invalid(f"unreadable: {type(err).__name__}") from err
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise invalid(f"a single .npy array of shape {getattr(f, 'shape', '?')}, not an .npz archive")
    try:
        with f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as err:   # an object array: would need pickle, which is never allowed here
        raise invalid("it holds an object array; checkpoints hold plain numeric arrays only, and "
                      "pickled data is refused because loading it can run code") from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise invalid(f"truncated or corrupted archive: {type(err).__name__}: {err}") from err
    if "metadata" not in arrays:
        raise invalid("no 'metadata' entry; not an npattention checkpoint")
    try:
        meta = json.loads(str(arrays["metadata"]))
    except ValueError as err:
        raise invalid("its 'metadata' entry is not JSON") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("metadata", {}), dict):
        raise invalid("its 'metadata' entry is not a JSON object with a 'metadata' object")
    if meta.get("format") != FORMAT or not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ValueError(f"load_checkpoint: {path} has format {meta.get('format')!r} version "
                         f"{meta.get('version')!r}; this npattention reads {FORMAT!r} up to version {VERSION}")
    return arrays, meta


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
    path = _check_path(path, "load_checkpoint")
    arrays, meta = _read(path)
    targets = [("model", model)]
    for prefix, obj in (("optim", optimizer), ("schedule", scheduler)):
        if obj is not None:
            if not isinstance(obj, Optimizer if prefix == "optim" else LRSchedule):
                kind = "an npattention Optimizer" if prefix == "optim" else "an LRSchedule"
                raise TypeError(f"load_checkpoint: {'optimizer' if prefix == 'optim' else 'scheduler'!r} must be "
                                f"{kind}, got {type(obj).__name__}")
            if not _section(arrays, prefix):
                raise KeyError(f"load_checkpoint: {path} holds no '{prefix}/' entries, but "
                               f"{type(obj).__name__} state was requested")
            targets.append((prefix, obj))
    # check every section first, write only when all are valid: a failed load changes nothing
    writers = []
    for prefix, obj in targets:
        state = _section(arrays, prefix)  # numbers come back as 0-d arrays; int()/float() read them
        try:
            writers.append(obj._plan_load_state_dict(state, strict=strict) if prefix == "model"
                           else obj._plan_load_state_dict(state))
        except (KeyError, ValueError, TypeError) as err:
            # same error type, message prefixed with the file and the section
            raise type(err)(f"{path} [{prefix}/]: {err.args[0]}") from None
    for write in writers:
        write()
    return meta["metadata"]
