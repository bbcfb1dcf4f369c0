"""NumPy (CPU) vs CuPy (GPU): MultiheadAttention forward+backward at growing T, and one
Transformer training step; PyTorch's eager time too where it is installed.

    python benchmarks/bench_gpu.py            # both backends, in two child processes
    python benchmarks/bench_gpu.py --quick    # small sizes, for a smoke test
    python benchmarks/bench_gpu.py --json out.json   # also save the numbers (docs, notebook 11)

The backend is fixed at import, so each backend is measured in its own process
(NPATTENTION_BACKEND=numpy / cupy); the parent prints one table with the ratios.
A backend that cannot run here (no CuPy, no GPU) is reported as such.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

SHAPES = [(4, 256, 256, 8), (2, 1024, 256, 8), (1, 4096, 256, 8)]  # (B, T, E, H)
QUICK = [(2, 64, 64, 4), (1, 128, 64, 4)]


def _timeit(fn, sync, repeat):
    fn()
    sync()  # warm-up (CuPy compiles kernels on first use)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def child(shapes, repeat):
    """Measure on the backend this process was started with; print one JSON line."""
    import npattention
    from npattention.attention.multihead import MultiheadAttention
    from npattention.backend import BACKEND, Generator, xp

    sync = (lambda: xp.cuda.Stream.null.synchronize()) if BACKEND == "cupy" else (lambda: None)
    rows = {}
    info = _describe(BACKEND, xp)
    for B, T, E, H in shapes:
        npattention.manual_seed(0)
        mha = MultiheadAttention(E, H)
        x = Generator(0).normal((B, T, E))
        g = Generator(1).normal((B, T, E))

        def step():
            mha(x, x, x, need_weights=False)
            mha.backward(g)

        rows[f"mha B={B} T={T} E={E} H={H}"] = _timeit(step, sync, repeat)
    try:
        rows["transformer train step"] = _transformer_step(sync, repeat, quick=shapes is QUICK)
    except ImportError as err:  # the Transformer has not landed in this checkout
        print(f"transformer step skipped: {err}", file=sys.stderr)
    print(json.dumps({"backend": BACKEND, "times": rows, "info": info}))


def _describe(backend_name, xp):
    """Where this child ran: library versions and the device (or CPU) name."""
    import numpy

    info = {"numpy": numpy.__version__, "python": platform.python_version()}
    if backend_name == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
        info.update(cupy=xp.__version__, device=name.decode() if isinstance(name, bytes) else str(name))
    else:
        info.update(device=f"CPU ({platform.machine()}, {os.cpu_count()} cores, "
                           f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})")
    return info


def _transformer_step(sync, repeat, quick):
    import npattention
    from npattention.backend import Generator
    from npattention.losses import CrossEntropyLoss
    from npattention.optim import Adam
    from npattention.transformer import Transformer

    npattention.manual_seed(0)
    V, B, S, T, d = (20, 8, 12, 12, 32) if quick else (64, 64, 32, 32, 128)
    model = Transformer(V, V, d_model=d, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                        dim_feedforward=4 * d, dropout=0.0)
    gen = Generator(0)
    src, tgt_in, tgt_out = gen.integers(1, V, (B, S)), gen.integers(1, V, (B, T)), gen.integers(1, V, (B, T))
    loss_fn, opt = CrossEntropyLoss(), Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss_fn(model(src, tgt_in), tgt_out)
        model.backward(loss_fn.backward())
        opt.step()

    return _timeit(step, sync, repeat)


def torch_times(shapes, repeat):
    """PyTorch eager nn.MultiheadAttention fwd+bwd on the GPU if available, else CPU."""
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    rows = {}
    for B, T, E, H in shapes:
        mha = torch.nn.MultiheadAttention(E, H, batch_first=True).to(dev)
        x = torch.randn(B, T, E, device=dev, requires_grad=True)
        g = torch.randn(B, T, E, device=dev)

        def step():
            out, _ = mha(x, x, x, need_weights=False)
            out.backward(g)

        rows[f"mha B={B} T={T} E={E} H={H}"] = _timeit(step, sync, repeat)
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if dev == "cuda" else "CPU"}
    return f"torch-{dev}", rows, info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the timings (seconds) to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = QUICK if args.quick else SHAPES
    if args.child:
        child(shapes, args.repeat)
        return
    results, infos, missing = {}, {}, {}
    for name in ("numpy", "cupy"):
        env = dict(os.environ, NPATTENTION_BACKEND=name)
        cmd = [sys.executable, __file__, "--child", "--repeat", str(args.repeat)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            missing[name] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
            print(f"{name}: not measured ({missing[name]})")
            continue
        child_out = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name], infos[name] = child_out["times"], child_out["info"]
        for line in proc.stderr.strip().splitlines():
            print(f"{name}: {line}")
    torch_result = torch_times(shapes, args.repeat)
    if torch_result:
        results[torch_result[0]], infos[torch_result[0]] = torch_result[1], torch_result[2]
    else:
        missing["torch"] = "PyTorch is not installed"
    for name, info in infos.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"best of {args.repeat} runs after one warm-up; forward + backward (+ Adam step for the Transformer)")
    names = list(results)
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    both = {"numpy", "cupy"} <= set(names)
    print(f"{'case':<32}" + "".join(f"{n + ' ms':>14}" for n in names) + (f"{'numpy/cupy':>12}" if both else ""))
    for k in keys:
        line = f"{k:<32}" + "".join(f"{results[n][k] * 1e3:>14.2f}" if k in results[n] else f"{'-':>14}" for n in names)
        if both and k in results["numpy"] and k in results["cupy"]:
            line += f"{results['numpy'][k] / results['cupy'][k]:>11.1f}x"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shapes": [list(s) for s in shapes], "seconds": results, "info": infos,
                       "not_measured": missing}, f, indent=1)
        print(f"timings written to {args.json}")


if __name__ == "__main__":
    main()
