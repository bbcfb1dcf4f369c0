"""A speech-like frame sequence, synthesised in code (class note 002's truncated-attention example).

Speech is read as one feature vector per 10 ms frame (about 100 frames per second), so an
utterance of 20 s is 2000 frames, and a sound (a phone) lasts a few to a few tens of frames.
:func:`make_utterance` imitates that with a spectrogram-like sequence::

    frames (T, F)   F "frequency bands"; each phone has its own pattern of 2-3 formant bumps
    phones (T,)     which phone each frame belongs to (0 = silence)

Phones last ``min_dur .. max_dur`` frames; formants glide linearly into the next phone over a few
frames (coarticulation); a loudness envelope and noise are added; silences separate "words".
Nothing is recorded or downloaded: the point is the *structure* (long sequence, short local
units), which is what makes a band of +-w frames enough for self-attention.
"""
from ..backend import Generator, np, xp

__all__ = ["PHONES", "make_utterance"]

#: the toy phone inventory: formant centres (fraction of the band range) per phone; 0 is silence
PHONES = {
    0: ("sil", ()),
    1: ("a", (0.25, 0.45, 0.75)),
    2: ("i", (0.10, 0.70, 0.85)),
    3: ("u", (0.12, 0.25, 0.70)),
    4: ("e", (0.20, 0.60, 0.80)),
    5: ("o", (0.18, 0.32, 0.72)),
    6: ("s", (0.88, 0.95)),
    7: ("m", (0.08, 0.40)),
}


def make_utterance(T=2000, bands=24, min_dur=4, max_dur=18, noise=0.15, seed=0):
    """``(frames (T, bands) float, phones (T,) int64)`` on the active backend.

    Seeded; the same ``seed`` gives the same utterance.  Frames are log-spectrum-like values
    (formant bumps on a floor), each frame standardised afterwards to mean 0, std 1 across bands.
    """
    for name, v in (("T", T), ("bands", bands), ("min_dur", min_dur), ("max_dur", max_dur)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"make_utterance: '{name}' must be a positive int, got {v!r}")
    if max_dur < min_dur:
        raise ValueError(f"make_utterance: 'max_dur' ({max_dur}) must be >= 'min_dur' ({min_dur})")
    g = Generator(seed).host
    phones = np.zeros(T, dtype=np.int64)
    t = 0
    while t < T:                                       # words of 2-6 phones, separated by silence
        for _ in range(int(g.integers(2, 7))):
            d = int(g.integers(min_dur, max_dur + 1))
            phones[t:t + d] = int(g.integers(1, len(PHONES)))
            t += d
        t += int(g.integers(min_dur, 3 * max_dur))     # silence (phone 0)
    # formant positions per frame, gliding over `glide` frames at each phone change
    k = 3
    centres = np.zeros((T, k))
    present = np.zeros((T, k))
    for p, (_, formants) in PHONES.items():
        rows = phones == p
        for j, c in enumerate(formants):
            centres[rows, j] = c
            present[rows, j] = 1.0
    glide = 3
    kernel = np.ones(glide) / glide
    for j in range(k):                                 # smooth the jumps: coarticulation
        centres[:, j] = np.convolve(np.pad(centres[:, j], (glide // 2, glide - 1 - glide // 2), mode="edge"),
                                    kernel, mode="valid")
        present[:, j] = np.convolve(np.pad(present[:, j], (glide // 2, glide - 1 - glide // 2), mode="edge"),
                                    kernel, mode="valid")
    f = (np.arange(bands) + 0.5) / bands
    width = 0.05
    spec = (present[:, :, None] * np.exp(-0.5 * ((f[None, None, :] - centres[:, :, None]) / width) ** 2)).sum(1)
    loud = 1.0 + 0.3 * np.sin(np.arange(T) / 37.0) + 0.2 * g.standard_normal(T).cumsum() / np.sqrt(T)
    spec = np.log(1e-2 + np.clip(loud, 0.3, None)[:, None] * spec) + noise * g.standard_normal((T, bands))
    spec = (spec - spec.mean(axis=1, keepdims=True)) / (spec.std(axis=1, keepdims=True) + 1e-8)
    return xp.asarray(spec.astype(np.float32)), xp.asarray(phones)
