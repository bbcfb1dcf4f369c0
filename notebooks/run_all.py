"""Execute every notebook in full mode (NPATTENTION_FAST unset) and report each one's time.

    python notebooks/run_all.py                 # all notebooks, in reading order
    python notebooks/run_all.py 07 08           # only those whose name starts with 07 or 08
    python notebooks/run_all.py --fast          # the CI (fast) mode instead
    python notebooks/run_all.py --out DIR       # keep the executed copies (with outputs) in DIR

Executed copies go to a temporary folder (or ``--out``): the committed notebooks stay stripped.
Each notebook should take under about 3 minutes in full mode on 2 cores; the ones over
``--budget`` seconds (default 180) are flagged.  Two times are reported: wall-clock seconds, and
the CPU seconds the notebook's kernel used (user + system, from ``getrusage``), which is what the
wall time would be on an idle core and stays meaningful on a shared, busy machine.  The kernels get
one BLAS thread (``OPENBLAS_NUM_THREADS=1`` unless set), as under pytest (``tests/conftest.py``): on
a busy machine OpenBLAS's spinning threads multiply the CPU seconds of the many small matrix products
several times over (8x on notebook 07's training loops, measured on this project's 2-core machine).  Exit status 1
if any notebook failed.
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def notebooks(prefixes=()):
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    return paths


def run_one(path, out_dir, timeout):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}})
    start, cpu_start = time.perf_counter(), _children_cpu()
    error = None
    try:
        client.execute()  # starts the kernel, runs every cell, shuts the kernel down (and reaps it)
    except Exception as exc:  # report and go on with the next notebook
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    nbformat.write(nb, Path(out_dir) / path.name)
    return seconds, cpu, error


def _children_cpu():
    """CPU seconds (user + system) used so far by finished child processes (the kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose file name starts with one of these")
    parser.add_argument("--fast", action="store_true", help="fast (CI) mode: NPATTENTION_FAST=1")
    parser.add_argument("--out", help="folder for the executed notebooks (default: a temporary folder)")
    parser.add_argument("--budget", type=float, default=180.0, help="flag notebooks slower than this (s)")
    parser.add_argument("--timeout", type=int, default=7200, help="per-cell timeout (s)")
    args = parser.parse_args(argv)

    if args.fast:
        os.environ["NPATTENTION_FAST"] = "1"
    else:
        os.environ.pop("NPATTENTION_FAST", None)
    os.environ.setdefault("MPLBACKEND", "Agg")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the kernels inherit these
        os.environ.setdefault(var, "1")
    root = str(HERE.parent)
    os.environ["PYTHONPATH"] = root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    out_dir = args.out or tempfile.mkdtemp(prefix="npattention-notebooks-")
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    paths = notebooks(args.prefixes)
    print(f"{'fast' if args.fast else 'full'} mode, {len(paths)} notebooks, executed copies in {out_dir}", flush=True)
    failed, total, total_cpu = 0, 0.0, 0.0
    print(f"{'notebook':<45} {'wall':>9} {'kernel CPU':>11}", flush=True)
    for path in paths:
        seconds, cpu, error = run_one(path, out_dir, args.timeout)
        total, total_cpu = total + seconds, total_cpu + cpu
        flag = "FAILED " + error if error else ("over budget" if min(seconds, cpu) > args.budget else "ok")
        failed += error is not None
        print(f"{path.name:<45} {seconds:7.1f} s {cpu:9.1f} s  {flag}", flush=True)
    print(f"{'total':<45} {total:7.1f} s {total_cpu:9.1f} s  ({failed} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
