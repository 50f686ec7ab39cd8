"""The project's ``kat`` against real Finesse 2.3.1 outputs, one kat file per construct.

``tests/data/finesse2/*.kat`` are small files written for these tests; each ``.out``
beside them was made by a real Finesse 2.3.1 (``regenerate.py`` there remakes them when
given the binary, which is never committed). The ``kat`` program runs in this process
(as its warm server runs it) and must agree to 1e-9 relative, phases modulo 360.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from katparallel.finesse2 import program

DATA = Path(__file__).parent / "data" / "finesse2"
REFERENCES = sorted(p.with_suffix(".kat").name for p in DATA.glob("*.out")
                    if p.with_suffix(".kat").exists())
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from finesse2_corpus import (  # noqa: E402  (the corpus runner's rule)
    agree, complex_columns, differences, one_ulp_longer, read_out)


def run_kat(tmp_path: Path, name: str) -> tuple[int, Path]:
    katfile = tmp_path / name
    shutil.copy(DATA / name, katfile)
    return program.main([str(katfile)]), katfile.with_suffix(".out")


@pytest.mark.parametrize("name", REFERENCES)
def test_agrees_with_finesse2(name: str, tmp_path: Path, capsys) -> None:
    status, out = run_kat(tmp_path, name)
    assert status == 0, capsys.readouterr().err
    problem = agree(read_out(DATA / name.replace(".kat", ".out")), read_out(out),
                    complex_from=complex_columns((DATA / name).read_text()))
    assert problem is None, problem


def test_references_exist() -> None:
    assert len(REFERENCES) >= 10  # a missing .out must not shrink the test silently
    assert sorted(p.name for p in DATA.glob("*.kat")) == REFERENCES


def test_agree_catches_a_difference() -> None:
    ref = np.array([[0.0, 1.0, 359.9999999999]])
    assert agree(ref, ref * (1 + 1e-12)) is None
    assert agree(ref, np.array([[0.0, 1.0 + 1e-8, 359.9999999999]])) is not None
    assert agree(ref, np.array([[0.0, 1.0, -1e-10]])) is None  # phases modulo 360
    zeros = np.array([[0.0, 1.0, 0.0], [1.0, 2.0, 0.0]])
    assert agree(zeros, zeros + [[0, 0, 1e-13], [0, 0, 0]]) is None  # noise on zeros
    assert agree(zeros, zeros + [[0, 0, 1e-6], [0, 0, 0]]) is not None
    small = np.array([[1.0, 3.4e-11, 2.0]])  # the phase rule must not hide these
    assert agree(small, small * [[1, 1 + 4e-8, 1]]) is not None
    special = np.array([[1.0, np.inf, np.nan]])
    assert agree(special, special.copy()) is None  # inf and nan match themselves
    assert agree(special, np.array([[1.0, np.nan, np.nan]])) is not None
    assert agree(special, np.array([[1.0, np.inf, 0.0]])) is not None
    assert agree(special, np.array([[np.nan, np.inf, np.nan]])) is not None


def _aligo_design(tmp_path: Path, extra: str) -> Path:
    import importlib.util

    design = (Path(importlib.util.find_spec("pykat").origin).parent
              / "ifo" / "aligo" / "files" / "design.kat")
    katfile = tmp_path / "design.kat"
    katfile.write_text(design.read_text() + "\n" + extra)
    return katfile


def test_aligo_design_with_modes_traces_as_finesse2(tmp_path: Path, capsys) -> None:
    # PyKat's aLIGO design (not copied here) + aligo_design_homs.extra: 8 cavities.
    katfile = _aligo_design(tmp_path, (DATA / "aligo_design_homs.extra").read_text())
    assert program.main([str(katfile)]) == 0, capsys.readouterr().err
    problem = agree(read_out(DATA / "aligo_design_homs.out"),
                    read_out(katfile.with_suffix(".out")),
                    complex_from=complex_columns(katfile.read_text()))
    assert problem is None, problem


def test_fixed_beam_with_a_swept_geometry_is_refused(tmp_path: Path, capsys) -> None:
    # The beam parameters that make Finesse 3 trace as Finesse 2 are fixed numbers:
    # sweeping a lens would leave them stale, so the kat refuses instead.
    extra = (DATA / "aligo_design_homs.extra").read_text().replace(
        "noxaxis", "xaxis ITMX_lens f lin 34k 35k 1")
    katfile = _aligo_design(tmp_path, extra)
    assert program.main([str(katfile)]) == 1
    err = capsys.readouterr().err
    assert "'cav': Finesse 2's beam trace cannot be reproduced" in err, err
    assert "xaxis ITMX_lens f" in err and "Traceback" not in err


def test_beam_fixed_upstream_of_a_second_open_port() -> None:
    # open_port_gauss.kat needs Finesse 2's beam at two open ports; Finesse 3 takes one
    # gauss at an open port, so the second goes where Finesse 2's walk came from.
    model = program.load_model((DATA / "open_port_gauss.kat").read_text())
    fixed = sorted(g.node.full_name for g in model.gausses.values())
    assert fixed == ["IC1.p2.o", "IC2.p1.i"]


def test_laser_gouy_phase_with_a_swept_geometry_is_refused(tmp_path: Path, capsys) -> None:
    # laser_gouy_cav_modes.kat fixes the laser's Finesse 2 Gouy phase for one geometry;
    # sweeping the space before the cavity would leave it stale, so the kat refuses.
    text = (DATA / "laser_gouy_cav_modes.kat").read_text().replace(
        "xaxis m2 phi lin 0 20 1", "xaxis s0 L lin 1 2 1")
    katfile = tmp_path / "swept.kat"
    katfile.write_text(text)
    assert program.main([str(katfile)]) == 1
    err = capsys.readouterr().err
    assert "Gouy phase of the beam going into it" in err and "xaxis s0 L" in err, err


@pytest.mark.parametrize("name", [
    # Strain at both arms, radiation pressure, modulators, qnoisedS (issue 19: the
    # files PyKat users wrote).
    "aligo_sensitivity",
    # One end test mass moved, radiation pressure on the four test masses, 9 and 45
    # MHz sidebands, a DARM offset (without one the dark port's DC signal is a
    # residual that Finesse 2 moves by 3e-3 itself).
    "aligo_darm_etmx",
])
def test_aligo_design_with_signals_as_finesse2(name: str, tmp_path: Path, capsys) -> None:
    katfile = _aligo_design(tmp_path, (DATA / f"{name}.extra").read_text())
    assert program.main([str(katfile)]) == 0, capsys.readouterr().err
    problem = agree(read_out(DATA / f"{name}.out"), read_out(katfile.with_suffix(".out")),
                    complex_from=complex_columns(katfile.read_text()))
    assert problem is None, problem


def _aligo_and_one_ulp_longer(tmp_path: Path, name: str, capsys) -> tuple[np.ndarray, ...]:
    """Finesse 2's output of PyKat's aLIGO design + ``name.extra``, katparallel's, and
    katparallel's with every length one ulp longer (its own rounding); with our kat's
    standard error of the first run."""
    katfile = _aligo_design(tmp_path, (DATA / f"{name}.extra").read_text())
    longer = tmp_path / "longer" / "design.kat"
    longer.parent.mkdir()
    longer.write_text(one_ulp_longer(katfile.read_text()))
    assert program.main([str(katfile)]) == 0
    err = capsys.readouterr().err
    assert program.main([str(longer)]) == 0, capsys.readouterr().err
    pairs = complex_columns(katfile.read_text())
    ref = read_out(DATA / f"{name}.out")
    got, moved = read_out(katfile.with_suffix(".out")), read_out(longer.with_suffix(".out"))
    assert got.shape == ref.shape, err
    return differences(ref, got, pairs), differences(got, moved, pairs), ref, err


def test_aligo_strain_sensitivity_with_modes_as_finesse2(tmp_path: Path, capsys) -> None:
    # The aLIGO strain sensitivity with maxtem 2: every mode gets strain sidebands, as in
    # Finesse 2 (katparallel.finesse2.signals.install_strain; without it 4.6e-5 off).
    # The transfer function (column 1) agrees at every frequency. The noise (NSR, N)
    # agrees below 1 kHz; at 5 kHz katparallel's keeps rounding of 2e-8 of itself that
    # Finesse 2's has not (Finesse 2 moves by 1e-12 when every length is one ulp longer,
    # katparallel by 2e-8, erratically: 2 ulps longer it agrees to 1e-13), so the kat
    # says so (frontend._Translator.check_noise_with_modes) and the difference must
    # stay within what katparallel itself moves by.
    diff, own, ref, err = _aligo_and_one_ulp_longer(tmp_path, "aligo_sensitivity_modes",
                                                    capsys)
    assert "quantum noise with higher-order modes (maxtem 2)" in err, err
    rows, columns = np.nonzero(diff > 1e-9)
    assert set(columns) <= {2, 3} and (ref[rows, 0] > 1000).all(), (rows, columns)
    assert (diff.max(axis=1) <= 10 * np.maximum(own.max(axis=1), 1e-9)).all(), (diff, own)


def test_aligo_darm_at_refl_differs_by_rounding_only(tmp_path: Path, capsys) -> None:
    # aligo_darm.extra: DARM, both end test masses, no DARM offset, at the 9 MHz REFL
    # port is 1/13700 of each one's signal at 5 Hz (ETMX alone agrees to 9e-13), and
    # radiation pressure magnifies rounding there. Where katparallel differs from
    # Finesse 2 by more than 1e-9 (REFL at 5 Hz: 7.7e-8), it moves by as much itself
    # when every length is one ulp longer (6.1e-8; Finesse 2 by 1.4e-8): rounding, not
    # a convention. The dark port (ASI, ASQ at 45 MHz) agrees at every frequency.
    diff, own, ref, _ = _aligo_and_one_ulp_longer(tmp_path, "aligo_darm", capsys)
    rows, columns = np.nonzero(diff > 1e-9)
    assert set(columns) <= {3, 4} and (ref[rows, 0] < 20).all(), (rows, columns)
    assert (diff.max(axis=1) <= 10 * np.maximum(own.max(axis=1), 1e-9)).all(), (diff, own)
    assert own[0].max() > 1e-8  # the magnification itself, at 5 Hz


def test_ensemble_jobs_keep_finesse2_motion_coupling() -> None:
    # The rescaled motion blocks (katparallel.finesse2.signals) travel with the model
    # into pool workers and stepped jobs: each job gives Finesse 2's numbers.
    from katparallel import Ensemble

    reference = read_out(DATA / "fsig_bs_michelson.out")
    res = (Ensemble(str(DATA / "fsig_bs_michelson.kat"))
           .vary({"m1.phi": [0.0, 0.0]})
           .run(backend="multiprocessing", workers=2))
    assert not res.failures
    values = np.asarray(res["a4"], dtype=complex)
    for job in values:
        np.testing.assert_allclose(job.real, reference[:, 5], rtol=1e-9)
        np.testing.assert_allclose(job.imag, reference[:, 6], rtol=1e-9)


def test_stepped_jobs_keep_strain_in_every_mode() -> None:
    # Strain sidebands of every mode (signals.install_strain) follow the light when
    # a job steps the laser's power inside one built simulation: twice the power,
    # sqrt(2) times Finesse 2's sidebands.
    from katparallel import Ensemble

    reference = read_out(DATA / "fsig_space_modes.out")
    res = Ensemble(str(DATA / "fsig_space_modes.kat")).vary(
        {"laser.P": [1.0, 2.0]}).run(backend="serial")
    assert not res.failures
    values = np.asarray(res["u10"], dtype=complex)
    expected = reference[:, 3] + 1j * reference[:, 4]
    np.testing.assert_allclose(values[0], expected, rtol=1e-9)
    np.testing.assert_allclose(values[1], np.sqrt(2) * expected, rtol=1e-9)
