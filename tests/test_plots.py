"""Results.plot picks the plot a person would want and draws real data."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from katparallel import Ensemble, Normal


def test_line_for_one_dimensional_sweep(katscript, tmp_path):
    res = Ensemble(katscript).vary("L0.P", [1.0, 2.0, 3.0]).run(progress=False)
    ax = res.plot("P")
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(line.get_ydata(), [0.5, 1.0, 1.5], rtol=1e-12)
    ax.figure.savefig(tmp_path / "line.png")
    assert (tmp_path / "line.png").stat().st_size > 5000


def test_image_for_grid(tutorial_kat2):
    ts = np.array([0.1, 0.2, 0.3])
    res = Ensemble(tutorial_kat2).vary({"m1.T": ts, "m1.R": 1 - ts}).run(progress=False)
    ax = res.plot("P")
    mesh = ax.collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).ravel(), res["P"].values.ravel())


def test_histogram_for_samples(katscript):
    res = Ensemble(katscript).sample(200, {"L0.P": Normal(1, 0.1)}, seed=1).run(progress=False)
    ax = res.plot("P", bins=10)
    heights = [patch.get_height() for patch in ax.patches]
    assert len(heights) == 10 and sum(heights) == 200
    assert "200 samples" in ax.get_title()


def test_complex_output_plots_magnitude(katscript):
    res = Ensemble(katscript).vary("L0.P", [1.0, 4.0]).run(progress=False)
    ax = res.plot("a")
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), np.sqrt([0.5, 2.0]), rtol=1e-12)


def test_too_many_dimensions_says_how_to_select(tutorial_kat2):
    ts = np.array([0.1, 0.2])
    res = (
        Ensemble(tutorial_kat2)
        .vary({"m1.T": ts, "m1.R": 1 - ts})
        .vary("s1.L", [1.0, 2.0])
        .run(progress=False)
    )
    with pytest.raises(ValueError, match="select down to one or two"):
        res.plot("P")


def test_unknown_output_lists_outputs(katscript):
    res = Ensemble(katscript).run(progress=False)
    with pytest.raises(KeyError, match=r"outputs are \['P', 'a'\]"):
        res["Q"]
