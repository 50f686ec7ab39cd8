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


#: A Finesse 2 file whose dumped mirror has a mass (see ``fsig_mass_dump.kat``).
DUMPED_MASS = """\
l l1 1 0 n0
s s1 1 n0 n5
m1 mi 0.1 0.001 0 n5 n6
s sc 1 n6 n7
m2 me 0.99 0.002 10 dump n7
attr me M 1
fsig sig l1 amp 1 0 1
pd1 p2 $fs n6
xaxis sig f log 1 1k 3
"""


@pytest.mark.parametrize(("text", "path", "why"), [
    # Finesse 2 leaves a dump's light out of the force: the front end folds T into loss.
    (DUMPED_MASS, "me.T", "dump"),
    # Finesse 3's signal sidebands differ when a carrier frequency changes under fsig.
    (DUMPED_MASS, "l1.f", "carrier frequency"),
    # A modulator's amp signal is right only for the light the file gives it.
    ("fsig_mod_amp.kat", "m1.T", "modulator 'eom'"),
])
def test_finesse2_parameters_fixed_by_a_convention_are_refused(text, path, why):
    from pathlib import Path

    if text.endswith(".kat"):
        text = (Path(__file__).parent / "data" / "finesse2" / text).read_text()
    with pytest.raises(InvalidValuesError, match=f"'{path}' cannot be varied.*{why}"):
        Ensemble(text).vary(path, [0.1, 0.2])
    Ensemble(text).vary("fsig.f", [1.0, 2.0])  # the signal frequency stays free
