"""Train the demo Transformer on each toy task and record held-out exact match and time.

    python benchmarks/bench_transformer.py                    # reverse and dates (the targets)
    python benchmarks/bench_transformer.py --tasks reverse copy sort dates --seeds 0 1

Targets (issue "Transformer and positional encodings"): reverse >= 99% and dates >= 99%
held-out exact match (greedy decoding, whole string right), each trained within about a
minute on 2 CPU cores.  For every task and seed it prints the parameters, training
steps, training seconds, test accuracy and two ratios: accuracy / target and training
time / 60 s (<= 1 means within the minute).  Run with ``OPENBLAS_NUM_THREADS`` as you
like; on a shared machine the times are inflated by the other load.
"""
import argparse
import os
import sys

TARGETS = {"reverse": 0.99, "dates": 0.99, "copy": 0.99, "sort": 0.95}
BUDGET_S = 60.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["reverse", "dates"],
                        choices=["reverse", "dates", "copy", "sort"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
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


if __name__ == "__main__":
    sys.exit(main())
