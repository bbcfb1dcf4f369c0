"""npattention.viz: every heat map has a colour bar, axis labels and token/index labels,
one colour-map convention, shared scales for maps side by side, spaces shown as "␣"."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from npattention import viz  # noqa: E402
from npattention.masks import causal_mask  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _weights(shape, seed=0):
    e = np.exp(np.random.default_rng(seed).normal(size=shape))
    return e / e.sum(-1, keepdims=True)


def _colorbar(ax):
    im = ax.images[0]
    assert im.colorbar is not None, "every heat map must have a colour bar"
    return im.colorbar


def _ticks(labels):
    return [t.get_text() for t in labels]


def test_token_labels_show_spaces():
    assert viz.token_labels("a b") == ["a", "\u2423", "b"]
    assert viz.token_labels(["<sos>", " ", "head 1"]) == ["<sos>", "\u2423", "head 1"]
    assert viz.token_labels([3, 4]) == ["3", "4"]


@pytest.mark.parametrize("draw", ["plot_attention", "plot_heatmap", "plot_mask"])
def test_single_maps_have_colorbar_axis_labels_and_index_ticks(draw):
    w = _weights((4, 6))
    arg = causal_mask(4) if draw == "plot_mask" else w
    ax = getattr(viz, draw)(arg)
    _colorbar(ax)
    assert ax.get_xlabel() and ax.get_ylabel()
    # no labels given: the ticks are integer indices, never 0.5 between rows
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        values = [t.get_position() for t in labels]
        assert values, "index labels expected"
    xt = [v for v in ax.get_xticks() if 0 <= v <= arg.shape[-1] - 1]
    assert xt and all(float(v).is_integer() for v in xt)


def test_plot_attention_labels_tokens_and_spaces_and_uses_the_convention():
    w = _weights((3, 5))
    ax = viz.plot_attention(w, x_labels="ab cd", y_labels=["q0", " ", "q2"], title="t")
    assert _ticks(ax.get_xticklabels()) == ["a", "b", "\u2423", "c", "d"]
    assert _ticks(ax.get_yticklabels()) == ["q0", "\u2423", "q2"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("keys", "queries")
    assert ax.images[0].get_cmap().name == viz.CMAP
    assert ax.images[0].get_clim()[0] == 0.0            # weights are drawn from 0
    assert _colorbar(ax).ax.get_ylabel() == "attention weight"
    ax = viz.plot_attention(w, xlabel="source position", ylabel="sentence", vmax=1.0)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("source position", "sentence")
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_plot_heatmap_signed_maps_are_symmetric_about_zero():
    m = np.array([[-0.5, 0.1], [0.2, 2.0]])
    ax = viz.plot_heatmap(m, xlabel="dimension", ylabel="position", cbar_label="PE")
    assert ax.images[0].get_cmap().name == viz.CMAP_SIGNED
    assert ax.images[0].get_clim() == (-2.0, 2.0)
    assert _colorbar(ax).ax.get_ylabel() == "PE"
    ax = viz.plot_heatmap(np.abs(m))
    assert ax.images[0].get_cmap().name == viz.CMAP and ax.images[0].get_clim()[0] == 0.0


def test_show_heatmaps_share_one_scale_and_one_colorbar():
    maps = _weights((2, 3, 4, 5))
    maps[1, 2] *= 0.1                                     # one much fainter map
    fig = viz.show_heatmaps(maps, titles=["h1", "h2", "h3"], x_labels="abcde", y_labels="wxyz")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 6
    assert len({im.get_clim() for im in images}) == 1    # one scale for all six
    assert images[0].get_clim() == (0.0, pytest.approx(maps.max()))
    assert len(fig.axes) == 6 + 1                         # six maps and ONE colour bar
    assert all(im.colorbar is None or im is images[-1] for im in images)
    bottom_left = fig.axes[3]
    assert bottom_left.get_xlabel() == "keys" and bottom_left.get_ylabel() == "queries"
    assert _ticks(bottom_left.get_xticklabels()) == list("abcde")


def test_bad_labels_and_shapes_are_named():
    with pytest.raises(ValueError, match="'x_labels' has 2 labels"):
        viz.plot_attention(_weights((3, 4)), x_labels=["a", "b"])
    with pytest.raises(ValueError, match="'matrix' must be a 2-D"):
        viz.plot_heatmap(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="'matrices' must have shape"):
        viz.show_heatmaps(np.zeros((1, 2, 3, 4, 5)))
    with pytest.raises(TypeError, match="'mask' must be a boolean"):
        viz.plot_mask(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="negative entries.*plot_heatmap"):
        viz.plot_attention(np.array([[0.5, -0.5]]))      # scores are not weights: no clipping at 0
