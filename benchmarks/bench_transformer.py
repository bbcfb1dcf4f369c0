"""Train the demo Transformer on each toy task and record held-out exact match and time.

    python benchmarks/bench_transformer.py                    # reverse and dates (the targets)
    python benchmarks/bench_transformer.py --tasks reverse copy sort dates --seeds 0 1
    python benchmarks/bench_transformer.py --step             # one dates training step, where its time goes

Targets (issue "Transformer and positional encodings"): reverse >= 99% and dates >= 99%
held-out exact match (greedy decoding, whole string right), each trained within about a
minute on 2 CPU cores.  For every task and seed it prints the parameters, training
steps, training seconds, test accuracy and two ratios: accuracy / target and training
time / 60 s (<= 1 means within the minute).  Run with ``OPENBLAS_NUM_THREADS`` as you
like; on a shared machine the times are inflated by the other load.

``--step`` times one training step of the main demo (dates preset, batch 64: forward,
cross-entropy, backward, clipping, Adam) as CPU time per step (best of ``--repeat`` runs of
``--steps`` steps; CPU time is less sensitive to other load than wall-clock time) and shows
how it splits over the module classes (inclusive: MultiheadAttention contains its out_proj
Linear, which is also counted under Linear).
"""
import argparse
import collections
import os
import sys
import time

TARGETS = {"reverse": 0.99, "dates": 0.99, "copy": 0.99, "sort": 0.95}
BUDGET_S = 60.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["reverse", "dates"],
                        choices=["reverse", "dates", "copy", "sort"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--step", action="store_true", help="time one dates training step and split it by module")
    parser.add_argument("--steps", type=int, default=30, help="--step: steps per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="--step: timed runs (the best is reported)")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    if args.step:
        return step_breakdown(args.steps, args.repeat)
    from npattention.demos.transformer import run

    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"cpu count {os.cpu_count()}")
    head = (f"{'task':<8} {'seed':>4} {'params':>8} {'steps':>6} {'train s':>8} {'eval s':>7} "
            f"{'exact match':>11} {'target':>7} {'acc/target':>10} {'time/60s':>9}")
    print(head)
    print("-" * len(head))
    failed = []
    for task in args.tasks:
        for seed in args.seeds:
            r = run(task, seed=seed, progress=False)
            h = r["history"]
            acc, target, secs = r["accuracy"], TARGETS[task], h["seconds"]
            print(f"{task:<8} {seed:>4} {r['model'].num_parameters():>8,} {len(h['step_loss']):>6} "
                  f"{secs:>8.1f} {r['eval_seconds']:>7.1f} {acc:>11.2%} {target:>7.0%} "
                  f"{acc / target:>10.3f} {secs / BUDGET_S:>9.2f}", flush=True)
            if acc < target:
                failed.append(f"{task} seed {seed}")
    print("-" * len(head))
    print("all targets reached" if not failed else f"below target: {', '.join(failed)}")
    return 1 if failed else 0


def step_breakdown(steps, repeat):
    """CPU milliseconds per training step of the dates demo, and per module class."""
    from npattention import optim
    from npattention.backend import manual_seed
    from npattention.data import Vocab, load_task
    from npattention.demos import transformer as demo
    from npattention.losses import CrossEntropyLoss

    vocab, splits = load_task("dates", n_train=8000, n_val=200, n_test=10, seed=0)
    manual_seed(0)
    model = demo.build(vocab, **demo.PRESETS["dates"]["model"])
    loss_fn = CrossEntropyLoss(ignore_index=Vocab.PAD)
    opt = optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    step = demo.make_step(model, loss_fn)
    batches = list(splits["train"].batches(64, shuffle=True, seed=0))[:steps]

    def one(batch):
        opt.zero_grad()
        float(step(batch))
        optim.clip_grad_norm_(opt.params, 1.0)
        opt.step()

    for batch in batches[:3]:   # warm-up
        one(batch)
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for batch in batches:
            one(batch)
        best = min(best, (time.process_time() - start) / len(batches))
    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"dates training step (B=64, {model.num_parameters():,} parameters): {best * 1e3:.2f} ms CPU "
          f"(best of {repeat} x {len(batches)} steps); x 750 steps = {best * 750:.1f} s")

    spent = collections.defaultdict(float)   # one more pass with every forward/backward timed
    classes = {type(m) for m in model.modules()} | {type(loss_fn)}
    saved = [(cls, name, cls.__dict__[name]) for cls in classes for name in ("forward", "backward")
             if name in cls.__dict__]

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - start
        wrapper._contract_checked = True   # (already wrapped by Module)
        return wrapper

    for cls, name, fn in saved:
        setattr(cls, name, timed(fn, f"{cls.__name__}.{name}"))
    saved += [(optim.Adam, "step", optim.Adam.__dict__["step"])]
    optim.Adam.step = timed(optim.Adam.__dict__["step"], "Adam.step")
    clip = optim.clip_grad_norm_
    optim.clip_grad_norm_ = timed(clip, "clip_grad_norm_")
    try:
        start = time.process_time()
        for batch in batches:
            one(batch)
        total = time.process_time() - start
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
        optim.clip_grad_norm_ = clip
    print(f"split by module (inclusive, one more pass: {total / len(batches) * 1e3:.2f} ms/step):")
    for label, secs in sorted(spent.items(), key=lambda kv: -kv[1]):
        if "Transformer" in label or label.startswith(("Positionwise", "Sequential")):
            continue   # containers: their time is their children's
        print(f"  {label:<40} {secs / len(batches) * 1e3:7.2f} ms  {secs / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
