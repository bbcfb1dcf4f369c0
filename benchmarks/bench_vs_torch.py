"""Forward + backward of every module family, npattention against PyTorch eager on the CPU.

    python benchmarks/bench_vs_torch.py                    # every row, 1 and 2 threads, best of 7
    python benchmarks/bench_vs_torch.py --threads 1        # one thread count only
    python benchmarks/bench_vs_torch.py --only conv lstm   # rows whose name contains a word
    python benchmarks/bench_vs_torch.py --quick            # small sizes, 3 repeats (a smoke test)
    python benchmarks/bench_vs_torch.py --list             # the rows, nothing timed

Each row builds one npattention module (or function pair) and its PyTorch counterpart at
the same shape, dtype (float32) and arithmetic, then times ``forward + backward`` of both,
**interleaved** (ours, then PyTorch, ``--repeat`` times) and reports the best of each, their
ratio ``ours / torch`` (below 1: we are faster) and, for rows dominated by matrix products,
the achieved fraction of this machine's float32 matmul speed (a 1024^3 sgemm timed in the
same process).  Each thread count runs in its own subprocess, so that the BLAS libraries of
NumPy and PyTorch start with that many threads (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
``torch.set_num_threads``).

Both sides run with glibc's allocator told to keep freed memory (``MALLOC_TRIM_THRESHOLD_`` and
``MALLOC_MMAP_THRESHOLD_`` set high): otherwise the big temporaries of every step are handed back
to the OS and faulted in again on the next one, which costs 10-100 ms of system time per step at
the larger shapes and makes the timings depend on the process's history.  ``--default-malloc``
times with the allocator as it comes (what a plain ``python`` run gets).

At two or more threads each side's step starts after a short sleep (``--settle``, default 0.2 s):
OpenBLAS's worker threads and PyTorch's OpenMP threads spin-wait for a while after their last
call, so without the pause the step that follows finds the second core busy with the other
library's idle thread (measured: PyTorch's two-thread GRU row took 106 ms right after our step
and 13 ms after the pause, its SDPA 28.5 and 12.6 ms).

PyTorch is never a dependency of npattention: install it in a separate virtual environment
(``pip install torch`` next to ``pip install -e .``).  Without it the PyTorch column is empty
and the script still times our side (the ratio column shows ``-``).

Targets (issue "Speed"): every row at most 1.2x PyTorch, attention rows at most 0.9x, at one
thread and at two.  docs/speed.md lists where a row cannot get there in NumPy, and why.
Machines here are shared: compare the two columns of one run, never times across runs.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# ====================================================================== the rows
class Row:
    """One benchmark row: ``ours()`` and ``torch_()`` each build their side and return a
    zero-argument step (one forward + backward); ``flops`` (optional) counts the matrix
    products of one step (multiply-add = 2), for the fraction of the matmul speed."""

    def __init__(self, name, family, ours, torch_=None, flops=None, quick=None):
        self.name, self.family, self.ours, self.torch_, self.flops = name, family, ours, torch_, flops
        self.quick = quick or {}   # keyword overrides for --quick


def _rng(seed=0):
    from npattention.backend import Generator
    return Generator(seed)


def _t(a, grad=False):
    """npattention (NumPy) array -> torch tensor sharing nothing (a copy), float32."""
    import torch
    from npattention.backend import to_numpy
    t = torch.tensor(to_numpy(a))
    return t.requires_grad_(grad)


def _torch_step(module_or_fn, inputs, grad_out, params=()):
    """A torch forward + backward step; gradients are reset (set to None) before each step."""
    def step():
        for t in list(inputs) + list(params):
            t.grad = None
        out = module_or_fn(*inputs)
        if isinstance(out, tuple):
            out = out[0]
        out.backward(grad_out)
    return step


def _ours_step(m, inputs, grad_out, **kwargs):
    """Our forward + backward step of module ``m``; gradients are reset (zeroed) before each step."""
    def step():
        m.zero_grad()
        m(*inputs, **kwargs)
        m.backward(grad_out)
    return step


def _module_params(m):
    return list(m.parameters()) if hasattr(m, "parameters") else []


# ---------------------------------------------------------------- attention
def sdpa_rows():
    def make(B, H, T, D, causal):
        def ours():
            from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
            g = _rng()
            q, k, v = (g.normal((B, H, T, D)) for _ in range(3))
            dout = g.normal((B, H, T, D))

            def step():
                _, cache = scaled_dot_product_attention(q, k, v, is_causal=causal)
                scaled_dot_product_attention_backward(dout, cache)
            return step

        def torch_():
            import torch.nn.functional as F
            g = _rng()
            q, k, v = (_t(g.normal((B, H, T, D)), True) for _ in range(3))
            dout = _t(g.normal((B, H, T, D)))
            return _torch_step(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal),
                               (q, k, v), dout)
        flops = 3 * 2 * (2 * B * H * T * T * D) * (0.5 if causal else 1.0)
        return ours, torch_, flops
    rows = []
    for causal in (False, True):
        o, t, f = make(8, 8, 256, 32, causal)
        rows.append(Row(f"sdpa B8 H8 T256 D32{' causal' if causal else ''}", "attention", o, t, f))
    return rows


def mha_rows():
    def make(B, T, E, H):
        def ours():
            import npattention as npa
            m = npa.MultiheadAttention(E, H)
            g = _rng()
            x, dout = g.normal((B, T, E)), g.normal((B, T, E))

            return _ours_step(m, (x, x, x), dout, need_weights=False)

        def torch_():
            import torch
            m = torch.nn.MultiheadAttention(E, H, batch_first=True)
            g = _rng()
            x, dout = _t(g.normal((B, T, E)), True), _t(g.normal((B, T, E)))
            return _torch_step(lambda a: m(a, a, a, need_weights=False), (x,), dout, _module_params(m))
        N = B * T
        fwd = 2 * N * E * 3 * E + 2 * N * E * E + 2 * (2 * B * T * T * E)
        return ours, torch_, 3 * fwd
    return [Row("MultiheadAttention self B8 T256 E256 H8", "attention", *make(8, 256, 256, 8)),
            Row("MultiheadAttention self B1 T2048 E256 H4", "attention", *make(1, 2048, 256, 4))]


def _layer_flops(N, T, E, F, cross=False):
    fwd = 2 * N * E * 4 * E + 2 * 2 * N * T * E + 2 * N * E * F * 2
    if cross:
        fwd += 2 * N * E * 4 * E + 2 * 2 * N * T * E
    return 3 * fwd


def transformer_layer_rows():
    B, T, E, H, F = 32, 32, 128, 4, 512

    def enc_ours():
        import npattention as npa
        m = npa.TransformerEncoderLayer(E, H, F, dropout=0.0)
        g = _rng()
        x, dout = g.normal((B, T, E)), g.normal((B, T, E))

        return _ours_step(m, (x,), dout)

    def enc_torch():
        import torch
        m = torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True)
        g = _rng()
        x, dout = _t(g.normal((B, T, E)), True), _t(g.normal((B, T, E)))
        return _torch_step(m, (x,), dout, _module_params(m))

    def dec_ours():
        import npattention as npa
        m = npa.TransformerDecoderLayer(E, H, F, dropout=0.0)
        g = _rng()
        x, mem, dout = g.normal((B, T, E)), g.normal((B, T, E)), g.normal((B, T, E))
        mask = npa.causal_mask(T)

        return _ours_step(m, (x, mem), dout, tgt_mask=mask)

    def dec_torch():
        import torch
        m = torch.nn.TransformerDecoderLayer(E, H, F, dropout=0.0, batch_first=True)
        g = _rng()
        x, mem = _t(g.normal((B, T, E)), True), _t(g.normal((B, T, E)), True)
        dout = _t(g.normal((B, T, E)))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(T)
        return _torch_step(lambda a, b: m(a, b, tgt_mask=mask, tgt_is_causal=True), (x, mem), dout,
                           _module_params(m))
    N = B * T
    return [Row(f"TransformerEncoderLayer B{B} T{T} E{E} H{H} F{F}", "attention", enc_ours, enc_torch,
                _layer_flops(N, T, E, F)),
            Row(f"TransformerDecoderLayer B{B} T{T} E{E} H{H} F{F} causal", "attention", dec_ours, dec_torch,
                _layer_flops(N, T, E, F, cross=True))]


def demo_step_rows():
    """One full training step of the main demo: the dates Transformer, batch 64, Adam + clipping."""
    def batch():
        from npattention.data import load_task
        vocab, splits = load_task("dates", n_train=512, n_val=10, n_test=10, seed=0)
        return vocab, next(iter(splits["train"].batches(64, shuffle=True, seed=0)))

    def ours():
        from npattention.demos import transformer as demo
        from npattention.data import Vocab
        from npattention.losses import CrossEntropyLoss
        from npattention.optim import Adam, clip_grad_norm_
        vocab, b = batch()
        model = demo.build(vocab, **demo.PRESETS["dates"]["model"])
        loss_fn = CrossEntropyLoss(ignore_index=Vocab.PAD)
        opt = Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
        step = demo.make_step(model, loss_fn)
        model.train()

        def run():
            opt.zero_grad()
            float(step(b))
            clip_grad_norm_(opt.params, 1.0)
            opt.step()
        return run

    def torch_():
        import math

        import torch
        from npattention.backend import to_numpy
        from npattention.data import Vocab
        from npattention.positional import sinusoidal_table
        cfg = dict(_demo_model_config())
        vocab, b = batch()
        V, d = len(vocab), cfg["d_model"]

        class Model(torch.nn.Module):   # the same architecture as npattention.Transformer (tied output)
            def __init__(self):
                super().__init__()
                self.src_embed = torch.nn.Embedding(V, d, padding_idx=Vocab.PAD)
                self.tgt_embed = torch.nn.Embedding(V, d, padding_idx=Vocab.PAD)
                self.register_buffer("pe", torch.tensor(to_numpy(sinusoidal_table(64, d))))
                self.core = torch.nn.Transformer(d, cfg["nhead"], cfg["num_encoder_layers"],
                                                 cfg["num_decoder_layers"], cfg["dim_feedforward"],
                                                 dropout=0.0, batch_first=True)
                self.out_bias = torch.nn.Parameter(torch.zeros(V))

            def forward(self, src, tgt):
                S, T = src.shape[1], tgt.shape[1]
                x = self.src_embed(src) * math.sqrt(d) + self.pe[:S]
                y = self.tgt_embed(tgt) * math.sqrt(d) + self.pe[:T]
                causal = torch.nn.Transformer.generate_square_subsequent_mask(T)
                h = self.core(x, y, tgt_mask=causal, tgt_is_causal=True,
                              src_key_padding_mask=src == Vocab.PAD, tgt_key_padding_mask=tgt == Vocab.PAD,
                              memory_key_padding_mask=src == Vocab.PAD)
                return h @ self.tgt_embed.weight.T + self.out_bias

        model = Model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=Vocab.PAD)
        src, tgt_in, tgt_out = (torch.tensor(to_numpy(a)) for a in (b.src, b.tgt_in, b.tgt_out))

        def run():
            opt.zero_grad()
            logits = model(src, tgt_in)
            loss = loss_fn(logits.reshape(-1, V), tgt_out.reshape(-1))
            loss.backward()
            float(loss)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return run
    return [Row("main demo training step (dates Transformer, B64)", "attention", ours, torch_)]


def _demo_model_config():
    from npattention.demos import transformer as demo
    return demo.PRESETS["dates"]["model"]


# ---------------------------------------------------------------- recurrent
def rnn_rows():
    B, T, I, H = 64, 32, 64, 128

    def make(kind):
        gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]

        def ours():
            import npattention as npa
            m = getattr(npa, kind)(I, H)
            g = _rng()
            x, dout = g.normal((B, T, I)), g.normal((B, T, H))

            return _ours_step(m, (x,), dout)

        def torch_():
            import torch
            m = getattr(torch.nn, kind)(I, H, batch_first=True)
            g = _rng()
            x, dout = _t(g.normal((B, T, I)), True), _t(g.normal((B, T, H)))
            return _torch_step(m, (x,), dout, _module_params(m))
        flops = 3 * 2 * B * T * gates * H * (I + H)
        return Row(f"{kind} B{B} T{T} I{I} H{H}", "recurrent", ours, torch_, flops)
    return [make("RNN"), make("GRU"), make("LSTM")]


# ---------------------------------------------------------------- convolution, pooling, norms
def conv_rows():
    def make2d(B, C, O, HW, k, stride=1, padding=1, dilation=1, groups=1):
        def ours():
            import npattention as npa
            m = npa.Conv2d(C, O, k, stride=stride, padding=padding, dilation=dilation, groups=groups)
            g = _rng()
            x = g.normal((B, C, HW, HW))
            out = m(x)
            dout = g.normal(out.shape)

            return _ours_step(m, (x,), dout)

        def torch_():
            import torch
            m = torch.nn.Conv2d(C, O, k, stride=stride, padding=padding, dilation=dilation, groups=groups)
            g = _rng()
            x = _t(g.normal((B, C, HW, HW)), True)
            with torch.no_grad():
                shape = m(x).shape
            dout = _t(g.normal(tuple(shape)))
            return _torch_step(m, (x,), dout, _module_params(m))
        Ho = (HW + 2 * padding - dilation * (k - 1) - 1) // stride + 1
        flops = 3 * 2 * B * O * Ho * Ho * (C // groups) * k * k
        extra = "".join([f" s{stride}" if stride > 1 else "", f" d{dilation}" if dilation > 1 else "",
                         f" groups{groups}" if groups > 1 else ""])
        return Row(f"Conv2d {k}x{k} B{B} {C}->{O} {HW}x{HW}{extra}", "conv", ours, torch_, flops)

    def make1d(B, C, O, L, k):
        def ours():
            import npattention as npa
            m = npa.Conv1d(C, O, k, padding=k // 2)
            g = _rng()
            x, dout = g.normal((B, C, L)), g.normal((B, O, L))

            return _ours_step(m, (x,), dout)

        def torch_():
            import torch
            m = torch.nn.Conv1d(C, O, k, padding=k // 2)
            g = _rng()
            x, dout = _t(g.normal((B, C, L)), True), _t(g.normal((B, O, L)))
            return _torch_step(m, (x,), dout, _module_params(m))
        return Row(f"Conv1d k{k} B{B} {C}->{O} L{L}", "conv", ours, torch_, 3 * 2 * B * O * L * C * k)
    return [make2d(32, 32, 64, 32, 3),
            make2d(32, 32, 64, 32, 3, stride=2),
            make2d(32, 32, 64, 32, 3, padding=2, dilation=2),
            make2d(32, 64, 64, 32, 3, groups=64),
            make2d(32, 64, 64, 32, 1, padding=0),
            make1d(32, 64, 64, 128, 5)]


def _simple_map_row(name, family, shape, ours_module, torch_module):
    """A row for a module ``(B, C, H, W) -> same-or-smaller map``, built by two factories."""
    def ours():
        m = ours_module()
        g = _rng()
        x = g.normal(shape)
        out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        dout = g.normal(out.shape)

        return _ours_step(m, (x,), dout)

    def torch_():
        import torch
        m = torch_module()
        g = _rng()
        x = _t(g.normal(shape), True)
        with torch.no_grad():
            out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        dout = _t(g.normal(tuple(out.shape)))
        return _torch_step(m, (x,), dout, _module_params(m))
    return Row(name, family, ours, torch_)


def pool_norm_rows():
    import npattention as npa
    shape = (32, 64, 32, 32)

    def tnn(name, *a, **k):
        def f():
            import torch
            return getattr(torch.nn, name)(*a, **k)
        return f
    return [
        _simple_map_row("MaxPool2d 2x2 B32 C64 32x32", "pooling", shape, lambda: npa.MaxPool2d(2), tnn("MaxPool2d", 2)),
        _simple_map_row("MaxPool2d 3x3 s2 p1 B32 C64 32x32", "pooling", shape,
                        lambda: npa.MaxPool2d(3, 2, 1), tnn("MaxPool2d", 3, 2, 1)),
        _simple_map_row("AvgPool2d 3x3 s1 p1 B32 C64 32x32", "pooling", shape,
                        lambda: npa.AvgPool2d(3, 1, 1), tnn("AvgPool2d", 3, 1, 1)),
        _simple_map_row("AdaptiveAvgPool2d(1) B32 C64 32x32", "pooling", shape,
                        lambda: npa.AdaptiveAvgPool2d(1), tnn("AdaptiveAvgPool2d", 1)),
        _simple_map_row("BatchNorm2d train B32 C64 32x32", "norm", shape,
                        lambda: npa.BatchNorm2d(64), tnn("BatchNorm2d", 64)),
    ]


def sequence_layer_rows():
    B, T, E, V = 32, 128, 256, 1000

    def layernorm():
        def ours():
            import npattention as npa
            m = npa.LayerNorm(E)
            g = _rng()
            x, dout = g.normal((B, T, E)), g.normal((B, T, E))

            return _ours_step(m, (x,), dout)

        def torch_():
            import torch
            m = torch.nn.LayerNorm(E)
            g = _rng()
            x, dout = _t(g.normal((B, T, E)), True), _t(g.normal((B, T, E)))
            return _torch_step(m, (x,), dout, _module_params(m))
        return Row(f"LayerNorm B{B} T{T} E{E}", "norm", ours, torch_)

    def embedding():
        def ours():
            import npattention as npa
            m = npa.Embedding(V, E, padding_idx=0)
            g = _rng()
            ids, dout = g.integers(0, V, (B, T)), g.normal((B, T, E))

            return _ours_step(m, (ids,), dout)

        def torch_():
            import torch
            m = torch.nn.Embedding(V, E, padding_idx=0)
            g = _rng()
            ids = torch.tensor(_np(g.integers(0, V, (B, T))))
            dout = _t(g.normal((B, T, E)))
            return _torch_step(m, (ids,), dout, _module_params(m))
        return Row(f"Embedding V{V} E{E} B{B} T{T}", "embedding", ours, torch_)

    def cross_entropy():
        def ours():
            import npattention as npa
            m = npa.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
            g = _rng()
            logits, y = g.normal((B, T, V)), g.integers(0, V, (B, T))

            def step():
                m(logits, y)
                m.backward()
            return step

        def torch_():
            import torch
            m = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
            g = _rng()
            logits = _t(g.normal((B * T, V)), True)
            y = torch.tensor(_np(g.integers(0, V, (B, T))).reshape(-1))

            def step():
                logits.grad = None
                m(logits, y).backward()
            return step
        return Row(f"CrossEntropyLoss B{B} T{T} V{V} (ignore_index, smoothing)", "loss", ours, torch_)
    return [layernorm(), embedding(), cross_entropy()]


def _np(a):
    from npattention.backend import to_numpy
    return to_numpy(a)


# ---------------------------------------------------------------- spatial transformer
def grid_rows():
    B, C, HW = 32, 8, 64

    def sample():
        def ours():
            from npattention.vision.stn import affine_grid, grid_sample, grid_sample_backward
            g = _rng()
            x = g.normal((B, C, HW, HW))
            theta = _random_theta(g, B)
            grid = affine_grid(theta, (B, C, HW, HW))
            dout = g.normal((B, C, HW, HW))

            def step():
                grid_sample(x, grid)
                grid_sample_backward(dout, x, grid)
            return step

        def torch_():
            import torch.nn.functional as F
            g = _rng()
            x = _t(g.normal((B, C, HW, HW)), True)
            theta = _t(_random_theta(g, B))
            grid = F.affine_grid(theta, (B, C, HW, HW), align_corners=False).detach().requires_grad_(True)
            dout = _t(g.normal((B, C, HW, HW)))
            return _torch_step(lambda a, b: F.grid_sample(a, b, align_corners=False), (x, grid), dout)
        return Row(f"grid_sample bilinear B{B} C{C} {HW}x{HW}", "spatial", ours, torch_)

    def affine():
        def ours():
            from npattention.vision.stn import affine_grid, affine_grid_backward
            g = _rng()
            theta = _random_theta(g, B)
            dgrid = g.normal((B, HW, HW, 2))

            def step():
                affine_grid(theta, (B, C, HW, HW))
                affine_grid_backward(dgrid, (B, C, HW, HW))
            return step

        def torch_():
            import torch.nn.functional as F
            g = _rng()
            theta = _t(_random_theta(g, B), True)
            dgrid = _t(g.normal((B, HW, HW, 2)))
            return _torch_step(lambda t: F.affine_grid(t, (B, C, HW, HW), align_corners=False), (theta,), dgrid)
        return Row(f"affine_grid B{B} {HW}x{HW}", "spatial", ours, torch_)

    def stn():
        def ours():
            import npattention as npa
            m = npa.SpatialTransformer(1, 28, 28, hidden=32)
            g = _rng()
            x, dout = g.normal((64, 1, 28, 28)), g.normal((64, 1, 28, 28))
            m.fc2.weight.data[...] = g.normal(m.fc2.weight.data.shape, scale=0.01)

            return _ours_step(m, (x,), dout)

        def torch_():
            import torch
            import torch.nn.functional as F

            class STN(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc1, self.fc2 = torch.nn.Linear(28 * 28, 32), torch.nn.Linear(32, 6)

                def forward(self, x):
                    theta = self.fc2(torch.tanh(self.fc1(x.flatten(1)))).view(-1, 2, 3)
                    return F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False)
            m = STN()
            g = _rng()
            x, dout = _t(g.normal((64, 1, 28, 28)), True), _t(g.normal((64, 1, 28, 28)))
            return _torch_step(m, (x,), dout, _module_params(m))
        return Row("SpatialTransformer B64 1x28x28", "spatial", ours, torch_)
    return [sample(), affine(), stn()]


def _random_theta(g, B):
    """Affine maps near the identity (rotation up to ~0.4 rad, scale 0.8-1.2, shifts up to 0.2)."""
    from npattention.backend import xp
    a = g.uniform((B,), -0.4, 0.4, dtype=xp.float64)
    s = g.uniform((B,), 0.8, 1.2, dtype=xp.float64)
    t = g.uniform((B, 2), -0.2, 0.2, dtype=xp.float64)
    theta = xp.stack([xp.stack([s * xp.cos(a), -s * xp.sin(a), t[:, 0]], -1),
                      xp.stack([s * xp.sin(a), s * xp.cos(a), t[:, 1]], -1)], 1)
    return theta.astype(xp.float32)


# ---------------------------------------------------------------- vision attention blocks
def vision_block_rows():
    import npattention as npa
    shape = (32, 64, 16, 16)
    C = shape[1]

    def t_se():
        import torch

        class SE(torch.nn.Module):   # the notes' SELayer: squeeze, excite (C -> C/16 -> C), scale
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Sequential(torch.nn.Linear(C, C // 16, bias=False), torch.nn.ReLU(),
                                              torch.nn.Linear(C // 16, C, bias=False), torch.nn.Sigmoid())

            def forward(self, x):
                return x * self.fc(x.mean((2, 3)))[:, :, None, None]
        return SE()

    def t_cbam():
        import torch

        class CBAM(torch.nn.Module):   # channel (ratio 8) then spatial (7x7) attention
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Sequential(torch.nn.Conv2d(C, C // 8, 1, bias=False), torch.nn.ReLU(),
                                              torch.nn.Conv2d(C // 8, C, 1, bias=False))
                self.conv = torch.nn.Conv2d(2, 1, 7, padding=3, bias=False)

            def forward(self, x):
                ca = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)) + self.fc(x.amax((2, 3), keepdim=True)))
                x = x * ca
                s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
                return x * torch.sigmoid(self.conv(s))
        return CBAM()

    def t_eca():
        import torch

        class ECA(torch.nn.Module):   # 1-D conv over channels of the pooled vector, k = 5 for C = 64
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv1d(1, 1, npa.ECA(C).kernel_size, padding=npa.ECA(C).kernel_size // 2,
                                            bias=False)

            def forward(self, x):
                y = self.conv(x.mean((2, 3))[:, None, :])[:, 0]
                return x * torch.sigmoid(y)[:, :, None, None]
        return ECA()

    def t_sagan():
        import torch

        class SAGAN(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.q, self.k = torch.nn.Conv2d(C, C // 8, 1), torch.nn.Conv2d(C, C // 8, 1)
                self.v = torch.nn.Conv2d(C, C, 1)
                self.gamma = torch.nn.Parameter(torch.full((1,), 0.5))

            def forward(self, x):
                B, _, H, W = x.shape
                q = self.q(x).flatten(2).transpose(1, 2)
                k = self.k(x).flatten(2)
                a = torch.softmax(q @ k, dim=-1)
                o = self.v(x).flatten(2) @ a.transpose(1, 2)
                return self.gamma * o.view(B, C, H, W) + x
        return SAGAN()

    def sagan():
        m = npa.SelfAttention2d(C)
        m.gamma.data[...] = 0.5
        return m
    return [
        _simple_map_row(f"SEBlock C{C} {shape[2]}x{shape[3]} B{shape[0]}", "vision", shape, lambda: npa.SEBlock(C), t_se),
        _simple_map_row(f"CBAM C{C} {shape[2]}x{shape[3]} B{shape[0]}", "vision", shape, lambda: npa.CBAM(C), t_cbam),
        _simple_map_row(f"ECA C{C} {shape[2]}x{shape[3]} B{shape[0]}", "vision", shape, lambda: npa.ECA(C), t_eca),
        _simple_map_row(f"SelfAttention2d (SAGAN) C{C} {shape[2]}x{shape[3]} B{shape[0]}", "vision", shape,
                        sagan, t_sagan),
    ]


def all_rows():
    return (sdpa_rows() + mha_rows() + transformer_layer_rows() + demo_step_rows() + rnn_rows() + conv_rows()
            + pool_norm_rows() + sequence_layer_rows() + grid_rows() + vision_block_rows())


# ====================================================================== timing (worker)
def _best(step, repeat, sync):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def sgemm_gflops(xp):
    n = 1024
    a = xp.ones((n, n), dtype=xp.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * n ** 3 / best / 1e9


def _timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def worker(args):
    """Time the selected rows at one thread count; print one JSON line per row."""
    from npattention.backend import synchronize, xp
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    peak = sgemm_gflops(xp)
    import npattention
    print(json.dumps({"peak_gflops": peak, "malloc_kept": "MALLOC_TRIM_THRESHOLD_" in os.environ, "torch": None if torch is None else torch.__version__,
                      "npattention": os.path.dirname(os.path.dirname(os.path.abspath(npattention.__file__)))}),
          flush=True)
    for row in select(all_rows(), args.only):
        ours = row.ours()
        theirs = row.torch_() if (torch is not None and row.torch_ is not None and not args.no_torch) else None
        ours(), ours()                                     # warm-up (allocations, caches)
        if theirs is not None:
            theirs(), theirs()
        t_ours, t_torch = [], []
        for _ in range(args.repeat):                       # interleaved: ours, then torch, each repeat
            time.sleep(args.settle)                        # the other library's idle threads stop spinning
            t_ours.append(_best(ours, 1, synchronize))
            if theirs is not None:
                time.sleep(args.settle)
                t_torch.append(_best(theirs, 1, lambda: None))
        result = {"name": row.name, "family": row.family, "ours": min(t_ours),
                  "torch": min(t_torch) if t_torch else None,
                  "ours_median": sorted(t_ours)[len(t_ours) // 2]}
        if row.flops:
            result["matmul_fraction"] = row.flops / result["ours"] / 1e9 / peak
        print(json.dumps(result), flush=True)


def select(rows, words):
    if not words:
        return rows
    words = [w.lower() for w in words]
    return [r for r in rows if any(w in r.name.lower() or w == r.family for w in words)]


# ====================================================================== driver
TARGET = {"attention": 0.9}   # every other family: 1.2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--repeat", type=int, default=7, help="timed repetitions per row (default 7)")
    p.add_argument("--only", nargs="*", default=[], help="rows whose name contains one of these words (or family)")
    p.add_argument("--quick", action="store_true", help="3 repeats (a smoke test)")
    p.add_argument("--no-torch", action="store_true", help="time our side only")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc trimming on (default: keep freed memory, see the docstring)")
    p.add_argument("--root", default=os.path.dirname(HERE),
                   help="the checkout whose npattention is timed (default: this one); e.g. an older "
                        "worktree, to compare before and after on the same machine")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds of sleep before each timed step at two or more threads (default 0.2; 0 at one "
                        "thread): see the docstring")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 3
    sys.path.insert(0, os.path.abspath(args.root))   # this checkout's package, not an installed one
    if args.worker:
        args.threads = args.threads[0]
        if args.settle is None:
            args.settle = 0.2 if args.threads > 1 else 0.0
        return worker(args)
    if args.list:
        for r in select(all_rows(), args.only):
            print(f"{r.family:10s} {r.name}")
        return 0
    results = {}
    for n in args.threads:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
        if not args.default_malloc:   # keep freed memory: no page faults from re-allocating each step
            env.update(MALLOC_TRIM_THRESHOLD_=str(2 ** 30), MALLOC_MMAP_THRESHOLD_=str(2 ** 30))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(n), "--repeat", str(args.repeat),
               "--root", os.path.abspath(args.root)]
        if args.only:
            cmd += ["--only"] + args.only
        if args.no_torch:
            cmd += ["--no-torch"]
        if args.settle is not None:
            cmd += ["--settle", str(args.settle)]
        print(f"# {n} thread(s): timing ...", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stderr)
            return out.returncode
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        results[n] = {"meta": lines[0], "rows": lines[1:]}
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def report(results):
    threads = sorted(results)
    meta = results[threads[0]]["meta"]
    print(f"npattention ({meta['npattention']}) vs PyTorch {meta['torch'] or '(not installed)'}: "
          f"forward + backward, float32, {'freed memory kept' if meta.get('malloc_kept') else 'default malloc'}, "
          f"best of the interleaved repeats; ratio = ours / torch (target <= 1.2, attention <= 0.9)")
    for n in threads:
        print(f"  sgemm at {n} thread(s): {results[n]['meta']['peak_gflops']:.0f} GFLOP/s")
    head = f"{'row':58s}" + "".join(f" | {n}t ours ms  torch ms  ratio  mm%" for n in threads)
    print(head)
    print("-" * len(head))
    names = [r["name"] for r in results[threads[0]]["rows"]]
    by = {n: {r["name"]: r for r in results[n]["rows"]} for n in threads}
    misses = 0
    for name in names:
        line = f"{name[:58]:58s}"
        for n in threads:
            r = by[n][name]
            target = TARGET.get(r["family"], 1.2)
            ratio = r["ours"] / r["torch"] if r["torch"] else None
            flag = " " if ratio is None or ratio <= target else "*"
            misses += flag == "*"
            mm = f"{100 * r['matmul_fraction']:3.0f}%" if "matmul_fraction" in r else "   -"
            torch_ms = f"{1e3 * r['torch']:9.2f}" if r["torch"] else f"{'-':>9s}"
            ratio_s = f"{ratio:5.2f}{flag}" if ratio else f"{'-':>6s}"
            line += f" | {1e3 * r['ours']:11.2f} {torch_ms} {ratio_s} {mm}"
        print(line)
    print(f"* over target: {misses} (row, thread count) pairs")


if __name__ == "__main__":
    sys.exit(main())
