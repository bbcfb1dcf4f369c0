"""Spatial transformer: accuracy with and without the STN at the same budget, the cost
of the vectorised bilinear sampler against a per-point Python loop, and its roofline.

    python benchmarks/bench_stn.py [--quick] [--seeds 0 1 2] [--threads 1] [--sampler-only]

Part 1 trains the demo's two models (MLP classifier, with / without a SpatialTransformer in
front) on randomly rotated / scaled / translated glyphs for several seeds and prints held-out
accuracies and their ratio (``--sampler-only`` skips it).  Part 2 times ``grid_sample`` forward
and backward (vectorised, scatter-add via ``backend.add_at``) against a straightforward loop
over sample points, and prints the speed-up.  Part 3 times the primitives the sampler is made
of (a flat gather ``xp.take``, the scatter ``add_at``, one elementwise pass) per element at the
shape of bench_vs_torch.py's grid_sample row, and the floor they set for a NumPy sampler that
makes one gather, one scatter and a few elementwise passes per corner value; docs/vision_spatial.md
("Speed") compares it with PyTorch's fused kernel.  Timings depend on the machine and on what
else runs on it.
"""
import argparse
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small data / sizes (a smoke test)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (set before NumPy loads)")
    p.add_argument("--sampler-only", action="store_true", help="skip part 1 (training)")
    return p.parse_args()


def _best(fn, repeat):
    from npattention.backend import synchronize  # imported late: --threads must act first

    fn()
    synchronize()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        synchronize()  # on a GPU, wait for the queued work before reading the clock
        best = min(best, time.perf_counter() - t0)
    return best


def loop_grid_sample(img, grid, align_corners=False):
    """Reference: one sample point at a time (B * H_out * W_out Python iterations)."""
    import numpy as np

    B, C, H, W = img.shape
    _, Ho, Wo, _ = grid.shape
    out = np.zeros((B, C, Ho, Wo))
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                u, v = grid[b, i, j]
                ix = (u + 1) / 2 * (W - 1) if align_corners else ((u + 1) * W - 1) / 2
                iy = (v + 1) / 2 * (H - 1) if align_corners else ((v + 1) * H - 1) / 2
                x0, y0 = int(np.floor(ix)), int(np.floor(iy))
                for r in (y0, y0 + 1):
                    for c in (x0, x0 + 1):
                        if 0 <= r < H and 0 <= c < W:
                            out[b, :, i, j] += (1 - abs(ix - c)) * (1 - abs(iy - r)) * img[b, :, r, c]
    return out


def main():
    args = _parse()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    from npattention.backend import BACKEND, Generator
    from npattention.demos.stn import train_pair

    print(f"backend: {BACKEND}, BLAS threads: {args.threads}")
    if not args.sampler_only:
        train_part(args, train_pair, np)
    sampler_part(args, rng=Generator(0))
    roofline_part(rng=Generator(0), repeat=5 if args.quick else 15)
    return 0


def train_part(args, train_pair, np):
    cfg = dict(size=16, n_train=1500, epochs=6, lr=2e-3) if args.quick else dict(size=28, n_train=5000, epochs=15, lr=1e-3)
    print(f"\n1) held-out accuracy on distorted glyphs, same budget: {cfg}")
    print(f"{'seed':>4} {'no STN':>8} {'STN':>8} {'ratio':>7} {'corr tx':>8} {'corr ty':>8} {'time STN':>9}")
    rows = []
    for seed in args.seeds:
        res = train_pair(seed=seed, progress=False, **cfg)
        base, stn = res["baseline"]["test_acc"], res["stn"]["test_acc"]
        rows.append((base, stn))
        a = res["agreement"]
        print(f"{seed:>4} {base:>8.3f} {stn:>8.3f} {stn / base:>7.2f} {a['tx']:>8.2f} {a['ty']:>8.2f} "
              f"{res['stn']['seconds']:>8.1f}s", flush=True)
    base, stn = np.mean(rows, axis=0)
    print(f"mean {base:>8.3f} {stn:>8.3f} {stn / base:>7.2f}")


def sampler_part(args, rng):
    import numpy as np

    from npattention.backend import to_numpy, xp
    from npattention.vision.stn import affine_grid, grid_sample, grid_sample_backward

    print("\n2) grid_sample: vectorised vs a loop over sample points (float64)")
    print(f"{'input':>18} {'grid':>14} {'loop fwd':>10} {'vec fwd':>10} {'speed-up':>9} {'vec bwd':>10}")
    shapes = [(2, 1, 16, 16), (8, 1, 28, 28)] if args.quick else [(8, 1, 28, 28), (64, 1, 28, 28), (16, 3, 64, 64)]
    for shape in shapes:
        B, C, H, W = shape
        x = rng.normal(shape, dtype=xp.float64)
        theta = xp.asarray(np.tile([[0.8, 0.2, 0.1], [-0.2, 0.8, -0.1]], (B, 1, 1)))
        grid = affine_grid(theta, shape)
        t_vec = _best(lambda: grid_sample(x, grid), 5)
        t_bwd = _best(lambda: grid_sample_backward(x, x, grid), 5)
        xh, gh = to_numpy(x), to_numpy(grid)
        t_loop = _best(lambda: loop_grid_sample(xh, gh), 1)
        assert np.allclose(loop_grid_sample(xh, gh), to_numpy(grid_sample(x, grid)))
        print(f"{str(shape):>18} {str(tuple(grid.shape)):>14} {t_loop * 1e3:>8.1f}ms {t_vec * 1e3:>8.2f}ms "
              f"{t_loop / t_vec:>8.0f}x {t_bwd * 1e3:>8.2f}ms", flush=True)


def roofline_part(rng, repeat):
    """Per-element cost of the sampler's primitives, and the floor they set (float32)."""
    from npattention.backend import add_at, xp
    from npattention.vision.stn import _channel_planes, _taps, affine_grid, grid_sample, grid_sample_backward

    B, C, H, W = 32, 8, 64, 64   # bench_vs_torch.py's grid_sample row
    x, g = rng.normal((B, C, H, W)), rng.normal((B, C, H, W))
    a = rng.uniform((B,), -0.4, 0.4, dtype=xp.float64)   # rotations, zooms and shifts near the identity
    s = rng.uniform((B,), 0.8, 1.2, dtype=xp.float64)
    t = rng.uniform((B, 2), -0.2, 0.2, dtype=xp.float64)
    theta = xp.stack([xp.stack([s * xp.cos(a), -s * xp.sin(a), t[:, 0]], -1),
                      xp.stack([s * xp.sin(a), s * xp.cos(a), t[:, 1]], -1)], 1).astype(xp.float32)
    grid = affine_grid(theta, (B, C, H, W))
    taps = _taps(grid, H, W, "bilinear", False, "zeros")
    index, weight = taps[:2]
    plane, n = _channel_planes(x)[0], index.size   # one channel: 4 corners x B*H_out*W_out points
    value = xp.take(plane, index)
    target = xp.zeros_like(plane)
    t_take = _best(lambda: xp.take(plane, index), repeat) / n
    t_scatter = _best(lambda: add_at(target, index.reshape(-1), value.reshape(-1)), repeat) / n
    t_pass = _best(lambda: weight * value, repeat) / n
    t_taps = _best(lambda: _taps(grid, H, W, "bilinear", False, "zeros"), repeat)
    step = lambda: (grid_sample(x, grid), grid_sample_backward(g, x, grid))
    t_step = _best(step, repeat)
    faults, sys_time = _faults(step, repeat)
    # per corner value and channel: a gather in the forward and one in the backward (the grid
    # gradient needs the values again), one scatter, ~4 elementwise passes (weight * value, the
    # sum over corners, weight * grad, grad * value); plus the taps, once per pass
    floor = C * n * (2 * t_take + t_scatter + 4 * t_pass) + 2 * t_taps
    print(f"\n3) roofline of grid_sample forward + backward, float32 {(B, C, H, W)}, "
          f"{C} x {n} = {C * n / 1e6:.1f}M corner values")
    print(f"   per element: gather (xp.take) {t_take * 1e9:.2f} ns, scatter (add_at) {t_scatter * 1e9:.2f} ns, "
          f"elementwise pass {t_pass * 1e9:.2f} ns; taps {t_taps * 1e3:.2f} ms")
    print(f"   floor {floor * 1e3:.1f} ms = {C} x {n} x (2 x gather + scatter + 4 x pass) + 2 x taps; "
          f"measured {t_step * 1e3:.1f} ms")
    if faults is not None:   # freed temporaries go back to the OS and are faulted in again next call
        print(f"   per step: {faults:.0f} page faults, {sys_time * 1e3:.1f} ms system time (in the measured time)")


def _faults(step, repeat):
    """Minor page faults and system CPU time per call of ``step`` (None where not available)."""
    try:
        import resource
    except ImportError:
        return None, None
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeat):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_minflt - before.ru_minflt) / repeat, (after.ru_stime - before.ru_stime) / repeat


if __name__ == "__main__":
    sys.exit(main())
