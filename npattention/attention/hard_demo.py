"""Soft vs hard attention on a toy retrieval task, trained three ways.

The task (:mod:`npattention.data.retrieval`): each example has ``n_keys`` keys, each holding a
label; the query is a disguised copy ``q = M k_t + noise`` of one key, and the answer is the label
at that key (chance: ``1 / n_keys``).  The model is ``Attention(GeneralScore(dim, dim), align)``:
it must learn ``W`` in ``s_j = q^T W k_j`` so that the right key scores highest.  The context
(the weighted values) is the predicted label distribution.

Training routes (plain SGD on ``W``):

``"soft"``               softmax weights, loss ``-log c_{y_t}`` (cross-entropy on the context).
``"straight_through"``   forward: a *sampled* one-hot choice, so the context is the value of
                         one key; loss ``1/2 |c - onehot(y_t)|^2``; backward through the softmax.
``"reinforce"``          forward: a sampled one-hot choice; reward 1 if the retrieved label is
                         right; REINFORCE gradient with a moving-average baseline.

Accuracy is always measured the same way, on a held-out batch, with the *hard argmax*
choice (the key with the best score): the fraction of queries whose retrieved label is right.
"""
from ..backend import Generator, manual_seed, scalar, xp
from ..data.retrieval import make_disguise, make_retrieval_batch  # noqa: F401  (the old import path works too)
from .align import HardAlign, Reinforce, SoftmaxAlign
from .attention import Attention
from .scores import GeneralScore

MODES = ("soft", "reinforce", "straight_through")


def _accuracy(model, batch):
    q, k, v, y = batch
    scores = model.score_step(q, k)[:, 0, :]  # (B, n)
    pred = xp.argmax(v[xp.arange(v.shape[0]), xp.argmax(scores, axis=-1)], axis=-1)
    return scalar(xp.mean(pred == y))  # the one sync per evaluation


def train_retrieval(mode="soft", steps=300, seed=0, n_keys=8, dim=8, batch=64, lr=None,
                    eval_every=10, noise=0.1):
    """Train ``W`` of a bilinear score on the retrieval task; return the accuracy history.

    Returns a list of ``(step, accuracy)`` pairs (accuracy on a fixed held-out batch of
    512 queries, hard argmax retrieval), starting with step 0 (before training).
    ``lr`` defaults to a value that works for each mode.
    """
    if mode not in MODES:
        raise ValueError(f"train_retrieval: 'mode' must be one of {MODES}, got {mode!r}")
    lr = {"soft": 2.0, "straight_through": 4.0, "reinforce": 4.0}[mode] if lr is None else lr
    gen = Generator(seed)
    M = make_disguise(gen, dim)  # the unknown disguise
    manual_seed(seed)
    if mode == "soft":
        align = SoftmaxAlign()
    else:
        align = HardAlign(mode="sample", straight_through=(mode == "straight_through"))
    model = Attention(GeneralScore(dim, dim), align).double()
    reinforce = Reinforce(momentum=0.9)
    test = make_retrieval_batch(Generator(seed + 10_000), M, 512, n_keys, noise)
    history = [(0, _accuracy(model, test))]
    for step in range(1, steps + 1):
        q, k, v, y = make_retrieval_batch(gen, M, batch, n_keys, noise)
        model.zero_grad()
        context, weights = model(q, k, v)  # context (B, 1, n): a distribution over labels
        target = (xp.arange(n_keys) == y[:, None, None]).astype(context.dtype)  # (B, 1, n)
        if mode == "soft":
            # cross-entropy on the retrieved label distribution, mean over the batch
            dcontext = -target / (context + 1e-12) / batch
            model.backward(dcontext)
        elif mode == "straight_through":
            dcontext = (context - target) / batch  # d/dc of 1/2 |c - y|^2, c = value of the sampled key
            model.backward(dcontext)
        else:
            reward = xp.sum(context * target, axis=-1)  # (B, 1): 1 if the sampled key holds the answer
            dscores = reinforce.grad_scores(reward, weights, align.probs, align.temperature)
            model.score_step.backward(dscores)  # no backprop through the sampling: only the score step
        for p in model.parameters():
            p.data -= lr * p.grad
        if step % eval_every == 0 or step == steps:
            history.append((step, _accuracy(model, test)))
    return history
