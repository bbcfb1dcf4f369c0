"""A small training loop: mini-batches, forward, loss, backward, clip, step, schedule.

The whole loop of :func:`fit`, one update at a time::

    optimizer.zero_grad()
    loss = step_fn(batch)                 # forward, loss, backward (grads into p.grad)
    clip_grad_norm_(params, max_norm)     # if clip_grad_norm is given
    optimizer.step()
    scheduler.step()                      # if a schedule is given

For ``(X, y)`` data and a ``model`` + ``loss_fn`` pair the default ``step_fn`` is::

    out = model(X); loss = loss_fn(out, y); model.backward(loss_fn.backward()); return loss

Models with several inputs or outputs (a Transformer with masks, a seq2seq decoder)
pass their own ``step_fn(batch)`` that does the forward and backward and returns the loss.
"""
import math

from tqdm.auto import tqdm

from .backend import Generator, is_array, np, xp
from .module import Module
from .optim import LRSchedule, Optimizer, clip_grad_norm_


def _num_rows(data, name="data", where="batches"):
    if isinstance(data, (tuple, list)):
        not_arrays = [f"{name}[{i}]: {type(a).__name__}" for i, a in enumerate(data) if not hasattr(a, "shape")]
        if not_arrays or not data:
            raise TypeError(f"{where}: {name!r} must be a tuple of arrays with the same number of rows, e.g. (X, y); "
                            f"got {', '.join(not_arrays) or 'an empty tuple'}")
        sizes = {int(a.shape[0]) if a.ndim else -1 for a in data}
        if len(sizes) != 1:
            raise ValueError(f"{where}: arrays in {name!r} must have the same number of rows, got "
                             f"{[tuple(a.shape) for a in data]}")
        return sizes.pop()
    if is_array(data):
        if data.ndim == 0:
            raise ValueError(f"{where}: {name!r} must have a leading batch axis, got a 0-d array")
        return int(data.shape[0])
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{where}: {name!r} must be an array, a tuple of arrays (X, y) or a dataset with "
                        f"len() and data[index_array]; got {type(data).__name__}")
    return len(data)


def _check_data(data, name, with_target):
    """Rows in ``data`` (> 0); with the default step it must be ``(*inputs, target)``."""
    n = _num_rows(data, name, "fit")
    if with_target and not (isinstance(data, (tuple, list)) and len(data) >= 2) and (
            is_array(data) or isinstance(data, (tuple, list))):
        got = f"a bare {type(data).__name__}" if is_array(data) else f"a tuple of {len(data)} array"
        raise ValueError(f"fit: {name!r} must be (*inputs, target), e.g. (X, y), for the default loss step; "
                         f"got {got} (pass step_fn to handle batches yourself)")
    if n == 0:
        raise ValueError(f"fit: {name!r} has 0 rows: nothing to train or evaluate on")
    return n


def _check_batch_size(batch_size, where):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"{where}: 'batch_size' must be a positive int, got {batch_size!r}")
    return batch_size


def _take(data, idx):
    """Rows ``idx`` (host int array) of an array, a tuple of arrays, or a dataset."""
    if isinstance(data, (tuple, list)):
        rows = xp.asarray(idx)
        return tuple(a[rows] for a in data)
    if is_array(data):
        return data[xp.asarray(idx)]
    return data[idx]  # a dataset object with __getitem__ (e.g. npattention.data.SeqDataset)


def batches(data, batch_size, shuffle=False, rng=None, drop_last=False):
    """Yield mini-batches of ``batch_size`` rows (the last one may be smaller).

    ``data``: one array (yields arrays), a tuple/list of arrays with the same number of
    rows, e.g. ``(X, y)`` (yields tuples), or a dataset object with ``len()`` and
    ``dataset[int_index_array]`` (yields what it returns).  ``shuffle``: visit the rows
    in the order of ``rng.host.permutation`` (``rng`` a :class:`~npattention.backend.Generator`
    or an int seed; the same order on NumPy and CuPy; ``None``: unseeded).  ``drop_last``:
    skip a last, smaller batch.
    """
    _check_batch_size(batch_size, "batches")
    n = _num_rows(data)
    if shuffle:
        rng = rng if isinstance(rng, Generator) else Generator(rng)
        order = rng.host.permutation(n)
    else:
        order = np.arange(n)  # host index array
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield _take(data, order[start:start + batch_size])


def num_batches(data, batch_size, drop_last=False):
    """How many batches :func:`batches` yields for ``data``."""
    _check_batch_size(batch_size, "num_batches")
    n = _num_rows(data, where="num_batches")
    return n // batch_size if drop_last else -(-n // batch_size)


def accuracy(model, data, batch_size=1024):
    """Fraction of rows whose ``argmax(model(X), -1)`` equals ``y`` for ``data = (X, y)``.

    Runs in eval mode (restores the previous mode) and in batches; any leading axes of
    the labels count (e.g. per-token accuracy for ``(B, T)`` labels).
    """
    X, y = data
    was_training = model.training
    model.eval()
    correct = total = 0
    for xb, yb in batches((X, y), batch_size):
        pred = xp.argmax(model(xb), axis=-1)
        correct = correct + xp.sum(pred == yb)  # summed on the device, read once below
        total += int(yb.size)
    model.train(was_training)
    return float(correct) / max(total, 1)


def _grads_finite(params):
    """All gradient entries finite?  (NaN and inf survive a sum: one read-back per step.)"""
    return math.isfinite(float(sum(xp.sum(p.grad, dtype=xp.float64) for p in params)))


def _loss_step(model, loss_fn):
    """The default ``step_fn`` for ``batch = (*inputs, target)``."""

    def step(batch):
        *inputs, target = batch
        out = model(*inputs)
        loss = loss_fn(out, target)
        model.backward(loss_fn.backward())
        return loss

    return step


def _mean_loss(model, loss_fn, data, batch_size):
    """Row-weighted mean of ``loss_fn`` over ``data`` in eval mode (no backward)."""
    was_training = model.training
    model.eval()
    total = count = 0.0
    for *inputs, target in batches(data, batch_size):
        n = int(target.shape[0])
        total = total + loss_fn(model(*inputs), target) * n  # on the device, read once below
        count += n
    model.train(was_training)
    return float(total) / max(count, 1)


def fit(model, loss_fn=None, optimizer=None, data=None, epochs=1, batch_size=32, *,
        step_fn=None, steps_per_epoch=None, scheduler=None, clip_grad_norm=None,
        metric=None, val_data=None, shuffle=True, seed=0, progress=True, callback=None, desc="train"):
    """Train ``model`` with ``optimizer``; return a history dict.

    Parameters
    ----------
    model : Module
        Put in train mode while training (eval mode for metrics and validation).
    loss_fn : Module or None
        A loss such as ``CrossEntropyLoss()``; used by the default step
        ``out = model(*inputs); loss = loss_fn(out, target); model.backward(loss_fn.backward())``
        with ``batch = (*inputs, target)``.  Not needed when ``step_fn`` is given.
    optimizer : Optimizer
        ``zero_grad()`` before each step, ``step()`` after it.
    data
        * a tuple/list of arrays with the same number of rows, e.g. ``(X, y)``;
        * a dataset object with ``len()`` and ``data[index_array]`` (e.g. ``SeqDataset``);
        * or a callable ``data(rng) -> batch`` that makes a fresh batch each step
          (``rng`` a seeded :class:`~npattention.backend.Generator`); then
          ``steps_per_epoch`` is required and ``batch_size``/``shuffle`` are unused.
    epochs, batch_size : int
    step_fn : callable ``step_fn(batch) -> loss`` or None
        Does forward, loss and backward for one batch (gradients into ``p.grad``) and
        returns the loss (a float or 0-d array).  Default: the ``model`` + ``loss_fn`` step.
    scheduler : LRSchedule or None
        ``scheduler.step()`` after every optimiser step.
    clip_grad_norm : float or None
        Clip the global L2 norm of all gradients to this value before each step; the
        pre-clip norms go to ``history["grad_norm"]``.
    metric : callable ``metric(model, data) -> float`` or None
        Evaluated (model in eval mode) on ``data`` after every epoch, and on ``val_data``
        if given; e.g. :func:`accuracy`.  Not used with callable ``data``.
    val_data
        Validation data in the same form as ``data`` (not callable).  With the default
        step, the validation loss is recorded too.
    shuffle : bool
        Shuffle the rows every epoch (a new permutation each epoch, from ``seed``).
    seed : int
        Seeds the batch order (or the ``rng`` given to callable ``data``).  Weight
        initialisation is *not* seeded here: call ``manual_seed`` before building the model.
    progress : bool
        Show a ``tqdm.auto`` progress bar (a widget in notebooks, text in terminals).
    callback : callable ``callback(epoch, history) -> bool`` or None
        Called after every epoch (``epoch`` counts from 1), e.g. to save a checkpoint;
        returning ``True`` stops training.

    Returns
    -------
    dict of lists:
        ``"loss"`` mean training loss per epoch; ``"step_loss"`` and ``"lr"`` per step;
        ``"grad_norm"`` per step (with ``clip_grad_norm``); ``"metric"``, ``"val_metric"``
        per epoch (with ``metric``); ``"val_loss"`` per epoch (default step + ``val_data``).

    Raises ``FloatingPointError`` as soon as the loss is NaN or infinite.
    Same seed, same initial weights, same data -> the same history, number for number.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fit: 'model' must be a npattention Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"fit: 'optimizer' must be an npattention Optimizer (e.g. Adam(model.parameters())), "
                        f"got {type(optimizer).__name__}")
    if scheduler is not None and not isinstance(scheduler, LRSchedule):
        raise TypeError(f"fit: 'scheduler' must be an LRSchedule, got {type(scheduler).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"fit: 'epochs' must be a positive int, got {epochs!r}")
    default_step = step_fn is None
    if default_step:
        if loss_fn is None:
            raise ValueError("fit: pass either 'loss_fn' (with data = (*inputs, target)) or 'step_fn'")
        step_fn = _loss_step(model, loss_fn)
    elif not callable(step_fn):
        raise TypeError(f"fit: 'step_fn' must be a function step_fn(batch) -> loss, got {type(step_fn).__name__}")
    if clip_grad_norm is not None and (isinstance(clip_grad_norm, bool) or not isinstance(clip_grad_norm, (int, float))
                                       or not 0 < clip_grad_norm < math.inf):
        raise ValueError(f"fit: 'clip_grad_norm' must be a finite number > 0 or None, got {clip_grad_norm!r}")
    generated = callable(data) and not isinstance(data, Module) and not hasattr(data, "__len__")
    if generated:
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(f"fit: callable 'data' needs 'steps_per_epoch' (a positive int), got {steps_per_epoch!r}")
        n_steps = steps_per_epoch
    elif data is None:
        raise ValueError("fit: 'data' is required: (X, y), a dataset, or a callable data(rng) -> batch")
    else:
        _check_data(data, "data", default_step)
        n_steps = num_batches(data, _check_batch_size(batch_size, "fit"))
    if val_data is not None:
        if callable(val_data) and not hasattr(val_data, "__len__"):
            raise TypeError("fit: 'val_data' must be data like (X, y) or a dataset, not a callable")
        _check_data(val_data, "val_data", default_step)

    rng = Generator(seed)
    history = {"loss": [], "step_loss": [], "lr": []}
    if clip_grad_norm is not None:
        history["grad_norm"] = []
    bar = tqdm(total=epochs * n_steps, desc=desc, disable=not progress, leave=True)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            if generated:
                epoch_batches = (data(rng) for _ in range(n_steps))
            else:
                epoch_batches = batches(data, batch_size, shuffle=shuffle, rng=rng)
            losses = []
            for batch in epoch_batches:
                optimizer.zero_grad()
                loss = step_fn(batch)
                try:
                    if getattr(loss, "size", 1) != 1 or isinstance(loss, (bool, str)):
                        raise TypeError
                    loss = float(loss)  # the one host sync per step
                except TypeError:
                    raise TypeError(f"fit: 'step_fn' must return the loss (a number or 0-d array), "
                                    f"got {type(loss).__name__}") from None
                where = f"epoch {epoch}, step {len(losses) + 1}"
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"fit: loss is {loss} at {where}; "
                        "lower the learning rate or set clip_grad_norm")
                # a non-finite gradient must never reach the weights: stop before the step
                if clip_grad_norm is not None:
                    try:
                        history["grad_norm"].append(clip_grad_norm_(optimizer.params, clip_grad_norm,
                                                                    error_if_nonfinite=True))
                    except FloatingPointError as err:
                        raise FloatingPointError(f"fit: at {where}, {err}") from None
                elif not _grads_finite(optimizer.params):
                    raise FloatingPointError(
                        f"fit: a gradient is NaN or inf at {where} (the loss {loss:.4g} is finite); the weights "
                        "were not updated; find the module with npattention.detect_anomaly()")
                history["lr"].append(optimizer.lr)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                losses.append(loss)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.4f}", refresh=False)
            history["step_loss"] += losses
            history["loss"].append(sum(losses) / len(losses))
            if metric is not None and not generated:
                history.setdefault("metric", []).append(float(metric(model, data)))
            if val_data is not None:
                if metric is not None:
                    history.setdefault("val_metric", []).append(float(metric(model, val_data)))
                if loss_fn is not None and isinstance(val_data, (tuple, list)):
                    history.setdefault("val_loss", []).append(_mean_loss(model, loss_fn, val_data, batch_size))
            shown = {k: f"{v[-1]:.4f}" for k, v in history.items() if k in ("loss", "metric", "val_metric")}
            bar.set_postfix(epoch=f"{epoch}/{epochs}", **shown)
            if callback is not None and callback(epoch, history):
                break
    finally:
        bar.close()
        model.train()
    return history


def plot_history(history, keys=("loss", "val_loss"), ax=None, title=None):
    """Plot per-epoch curves from a :func:`fit` history; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for key in keys:
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
    ax.set_xlabel("epoch")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
