"""The glyph CNN with an attention block really learns (a few seconds on one core), and the demo runs."""
import pytest

from npattention.backend import manual_seed
from npattention.losses import CrossEntropyLoss
from npattention.optim import Adam
from npattention.train import accuracy, fit
from npattention.data.glyphs import make_glyphs
from npattention.vision.models import AttentionCNN


@pytest.mark.parametrize("block", ["cbam", "se"])
def test_attention_cnn_learns_the_glyph_task(block):
    train = make_glyphs(800, size=20, n_classes=4, clutter=4, seed=0)
    test = make_glyphs(300, size=20, n_classes=4, clutter=4, seed=1)
    manual_seed(0)
    model = AttentionCNN(1, 4, block=block, width=6, reduction=3)
    before = accuracy(model, test)
    history = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=5e-3), train, epochs=3, batch_size=32,
                  progress=False)
    after = accuracy(model, test)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert before < 0.45 and after > 0.95, (before, after)       # chance is 0.25


def test_vision_demo_fast_writes_figures(tmp_path, capsys):
    from npattention.demos.vision import main

    assert main(["--block", "cbam", "--fast", "--out", str(tmp_path), "--size", "16", "--n-train", "200",
                 "--n-test", "64"]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy:" in out and str(tmp_path) in out
    for name in ("model.npz", "loss.png", "cbam_spatial.png", "cbam_channel_weights.png"):
        assert (tmp_path / name).stat().st_size > 0
