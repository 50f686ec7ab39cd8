"""Same seed, same numbers: on any backend, worker count or completion order."""

import random

import numpy as np

from katparallel import Ensemble, Normal, Uniform


def jitter_everything(model, rng):
    """Uses the job generator and both legacy global generators."""
    model.L0.P = 1 + 0.1 * rng.standard_normal() + 0.01 * np.random.standard_normal()
    model.s0.L = 1 + random.random()


def study(katscript, seed):
    return (
        Ensemble(katscript)
        .sample(12, {"m.T": Uniform(0.1, 0.5)}, seed=seed)
        .perturb(jitter_everything)
    )


def test_same_seed_same_results_different_seed_differs(katscript):
    first = study(katscript, 7).run(progress=False)
    again = study(katscript, 7).run(progress=False)
    other = study(katscript, 8).run(progress=False)
    np.testing.assert_array_equal(first["P"].values, again["P"].values)
    assert not np.array_equal(first["P"].values, other["P"].values)
    # every job drew its own numbers
    assert len(np.unique(first["P"].values)) == 12


def test_serial_equals_multiprocessing_bit_for_bit(katscript):
    serial = study(katscript, 11).run(progress=False)
    one = study(katscript, 11).run(backend="multiprocessing", workers=1, progress=False)
    two = study(katscript, 11).run(backend="multiprocessing", workers=2, progress=False)
    for res in (one, two):
        np.testing.assert_array_equal(res["P"].values, serial["P"].values)
        np.testing.assert_array_equal(res["a"].values, serial["a"].values)


def test_sampled_values_do_not_depend_on_backend(katscript):
    ens = Ensemble(katscript).sample(20, {"L0.P": Normal(1, 0.1)}, seed=3)
    a = ens.run(progress=False)
    b = ens.run(backend="multiprocessing", workers=2, progress=False)
    np.testing.assert_array_equal(a["P"]["L0.P"].values, b["P"]["L0.P"].values)
    np.testing.assert_array_equal(a["P"].values, b["P"].values)


def test_unseeded_study_records_a_reusable_seed(katscript):
    ens = Ensemble(katscript).sample(5, {"L0.P": Normal(1, 0.1)})
    first = ens.run(progress=False)
    second = ens.run(progress=False)
    assert first.seed != second.seed
    replay = Ensemble(katscript).sample(5, {"L0.P": Normal(1, 0.1)}, seed=first.seed).run(
        progress=False
    )
    np.testing.assert_array_equal(replay["P"].values, first["P"].values)


def test_job_generator_is_the_documented_spawn(katscript):
    """Job i's generator is SeedSequence(seed).spawn(n)[i], reproducible by hand."""
    seen = []

    def record(model, rng):
        model.L0.P = rng.random()

    res = Ensemble(katscript).sample(4, seed=99).perturb(record).run(progress=False)
    children = np.random.SeedSequence(99).spawn(4)
    expected = [np.random.default_rng(c).random() * 0.5 for c in children]
    np.testing.assert_allclose(res["P"].values, expected, rtol=1e-12)
    assert not seen
