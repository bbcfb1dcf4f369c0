"""Backend conformance: the same seeded modules and inputs must give the same numbers
on NumPy and on CuPy.

For every registered gradient-check case (see :mod:`npattention.gradcheck`) this runs
one forward and one backward in float64 with a seeded upstream gradient, and records on
the host the output, the input gradients and the parameter gradients.  Run it once per
backend and compare the two files::

    NPATTENTION_BACKEND=numpy python -m npattention.conformance dump cpu.npz
    NPATTENTION_BACKEND=cupy  python -m npattention.conformance dump gpu.npz
    python -m npattention.conformance compare cpu.npz gpu.npz

``tests/test_conformance.py`` does exactly this (the CuPy half is skipped where CuPy or
a CUDA device is missing).
"""
import argparse
import sys

from . import backend
from .backend import np as numpy  # host copies only
from .backend import to_numpy, xp
from .gradcheck import _as_tuple, _first, registered


def run_case(case, seed=0):
    """Forward + backward of one case in float64; ``{key: host array}``: the output (and
    any further arrays forward returns, e.g. attention weights), the input gradients and
    the parameter gradients."""
    module = case.module.double()
    inputs = tuple(x.astype(xp.float64) if backend.is_float_array(x) else x for x in case.inputs)
    diff = [i for i, x in enumerate(inputs) if backend.is_float_array(x)
            and i not in case.options.get("nondiff", ())]
    module.zero_grad()
    outputs = module(*inputs, **case.kwargs)
    out = _first(outputs)
    upstream = backend.Generator(seed).normal(out.shape, dtype=xp.float64)
    grads = _as_tuple(module.backward(upstream))
    result = {"output": to_numpy(out)}
    if isinstance(outputs, tuple):  # e.g. (output, attention weights): compare the extras too
        for i, extra in enumerate(outputs[1:], start=1):
            if backend.is_array(extra):
                result[f"output{i}"] = to_numpy(extra)
    for i, g in zip(diff, grads):
        result[f"grad_input{i}"] = to_numpy(g)
    for name, p in module.named_parameters():
        result[f"grad_{name}"] = to_numpy(p.grad)
    return result


def collect(names=None, seed=0):
    """Run every registered case (or those named); ``{"Name/case/key": host array}``."""
    table = registered()
    arrays = {}
    for name in names or table:
        backend.manual_seed(seed)
        for k, case in enumerate(table[name](backend.Generator(seed))):
            for key, value in run_case(case, seed).items():
                arrays[f"{name}/{k}/{key}"] = value
    return arrays


def compare(a, b, rtol=1e-7, atol=1e-9):
    """List of human-readable differences between two ``collect`` results."""
    problems = [f"{k}: only in the first" for k in sorted(set(a) - set(b))]
    problems += [f"{k}: only in the second" for k in sorted(set(b) - set(a))]
    for key in sorted(set(a) & set(b)):
        x, y = numpy.asarray(a[key]), numpy.asarray(b[key])
        if x.shape != y.shape:
            problems.append(f"{key}: shape {x.shape} vs {y.shape}")
        elif not numpy.allclose(x, y, rtol=rtol, atol=atol):
            problems.append(f"{key}: max abs difference {float(numpy.max(numpy.abs(x - y))):.3e}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m npattention.conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="run every case on the active backend and save the numbers")
    d.add_argument("path")
    d.add_argument("names", nargs="*")
    c = sub.add_parser("compare", help="compare two dumps")
    c.add_argument("first")
    c.add_argument("second")
    c.add_argument("--rtol", type=float, default=1e-7)
    c.add_argument("--atol", type=float, default=1e-9)
    args = parser.parse_args(argv)
    if args.command == "dump":
        arrays = collect(args.names or None)
        numpy.savez(args.path, **arrays)
        print(f"{backend.BACKEND}: {len(arrays)} arrays from {len({k.split('/')[0] for k in arrays})} modules -> {args.path}")
        return 0
    with numpy.load(args.first, allow_pickle=False) as fa, numpy.load(args.second, allow_pickle=False) as fb:
        problems = compare(dict(fa), dict(fb), args.rtol, args.atol)
        total = len(set(fa.files) | set(fb.files))
    for p in problems:
        print(p)
    print(f"{total - len(problems)} passed, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
