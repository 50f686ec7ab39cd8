"""Bad input fails early, with a message that names the fix."""

import numpy as np
import pytest

from katparallel import (
    BackendUnavailable,
    Ensemble,
    InvalidValuesError,
    ModelSourceError,
    Normal,
    UnknownParameterError,
)


def test_unknown_parameter_lists_close_matches(katscript):
    with pytest.raises(UnknownParameterError, match=r"no parameter 'm.Tx'.*'m.T'"):
        Ensemble(katscript).vary("m.Tx", [0.1])


def test_unknown_component(katscript):
    with pytest.raises(UnknownParameterError, match="L1.P"):
        Ensemble(katscript).vary("L1.P", [1])


def test_component_instead_of_parameter(katscript):
    with pytest.raises(UnknownParameterError, match="not a parameter.*m.R"):
        Ensemble(katscript).vary("m", [1])


def test_unknown_path_in_sample(katscript):
    with pytest.raises(UnknownParameterError, match="L0.P"):
        Ensemble(katscript).sample(3, {"L0.p": Normal(1, 0.1)})


@pytest.mark.parametrize(
    "values, message",
    [
        ([], "No values"),
        (["a", "b"], "must be numbers"),
        ("0.1", "string"),
        ([0.1, np.nan], "NaN or infinity at positions \\[1\\]"),
        ([[0.1, 0.2]], "one-dimensional"),
    ],
)
def test_bad_values(katscript, values, message):
    with pytest.raises(InvalidValuesError, match=message):
        Ensemble(katscript).vary("L0.P", values)


def test_zip_lengths_must_match(katscript):
    with pytest.raises(InvalidValuesError, match="same number of values"):
        Ensemble(katscript).vary({"m.T": [0.1, 0.2], "m.R": [0.9]})


def test_same_parameter_twice(katscript):
    with pytest.raises(InvalidValuesError, match="already varied"):
        Ensemble(katscript).vary("L0.P", [1]).vary("L0.P", [2])


def test_bad_sample_count(katscript):
    with pytest.raises(InvalidValuesError, match="positive whole number"):
        Ensemble(katscript).sample(0, {"L0.P": Normal(1, 0.1)})


def test_bad_distribution(katscript):
    with pytest.raises(TypeError, match="not a distribution"):
        Ensemble(katscript).sample(3, {"L0.P": 1.0})
    with pytest.raises(ValueError, match="sigma"):
        Normal(1, -1)


def test_unknown_backend(katscript):
    ens = Ensemble(katscript).vary("L0.P", [1])
    with pytest.raises(BackendUnavailable, match=r"Unknown backend 'multiprocesing'.*'multiprocessing'"):
        ens.run(backend="multiprocesing", progress=False)


def test_unreadable_model_text():
    with pytest.raises(ModelSourceError, match="Could not read the model"):
        Ensemble("this is not a model\nat all")


def test_missing_model_file():
    with pytest.raises(ModelSourceError, match="does not exist"):
        Ensemble("no_such_file.kat")


def test_not_a_model():
    with pytest.raises(ModelSourceError, match="Cannot make jobs"):
        Ensemble(42)


def test_bad_analysis(katscript):
    with pytest.raises(ValueError, match="Could not read the analysis"):
        Ensemble(katscript).run("xaxis(nope)", progress=False)


def test_bad_workers(katscript):
    with pytest.raises(ValueError, match="workers must be at least 1"):
        Ensemble(katscript).run(backend="multiprocessing", workers=0, progress=False)
