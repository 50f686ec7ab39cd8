"""``katparallel convert``: Finesse 3 KatScript that reproduces real Finesse 2 outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from katparallel.cli import main as cli

DATA = Path(__file__).parent / "data" / "finesse2"
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from finesse2_corpus import read_out  # noqa: E402


@pytest.mark.parametrize(("name", "detector", "column"), [
    ("const_ref.kat", "P", 1),
    ("shared_node.kat", "Pt", 9),     # abs:deg columns: P0 P0 P0s P0s Pj Pj a0 a0 Pt
    ("var_sweep.kat", "Pt", 3),       # abs:deg: P P Pt
    ("homs_by_cav.kat", "P", 1),
    ("func_put.kat", "scaled", 4),    # a func, as a math detector
    ("func_put.kat", "P", 1),         # put* of a func onto m2
])
def test_katscript_reproduces_finesse2(name: str, detector: str, column: int,
                                       capsys) -> None:
    import finesse

    assert cli(["convert", str(DATA / name)]) == 0
    katscript = capsys.readouterr().out
    model = finesse.Model()
    model.parse(katscript)  # Finesse 3 syntax, no legacy parser
    solution = model.run()
    reference = read_out(DATA / name.replace(".kat", ".out"))
    values = np.real(np.asarray(solution[detector], dtype=complex))  # math: object dtype
    np.testing.assert_allclose(values, reference[:, column],
                               rtol=1e-9, atol=1e-12)


def test_inexact_translation_names_the_lines(capsys) -> None:
    assert cli(["convert", str(DATA / "scale.kat")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "line 9: scale 2.5 P" in captured.err and "'scale'" in captured.err


def test_refused_construct(tmp_path: Path, capsys) -> None:
    katfile = tmp_path / "lock.kat"
    katfile.write_text((DATA / "const_ref.kat").read_text() + "lock z $P 1 1n\n")
    assert cli(["convert", str(katfile)]) == 1
    err = capsys.readouterr().err
    assert "line 14: lock z $P 1 1n" in err and "'lock'" in err


def test_tuned_surface_between_indices_is_refused(capsys) -> None:
    # Finesse 2's reflection phase there needs a Finesse 3 setting KatScript lacks.
    assert cli(["convert", str(DATA / "tuned_substrate.kat")]) == 1
    err = capsys.readouterr().err
    assert "line 5: bs1 BS 0.5 0 10 45" in err and "line 19: m1 X2" in err
    assert "'NI'" not in err and "'X'" not in err  # the same index on both sides


@pytest.mark.parametrize(("name", "detector", "column"), [
    ("fsig_space_notype.kat", "t", 7),  # re:im columns; Finesse 2's strain sign
    ("fsig_mass_mirror.kat", "t", 5),   # Finesse 2's motion sign at a mass
])
def test_katscript_keeps_finesse2_signal_signs(name: str, detector: str, column: int,
                                              tmp_path: Path, capsys) -> None:
    # The ad at $mfs is left out: Finesse 3 cannot read back its own '-fsig.f'
    # before the fsig line (unparse's order); the other columns stay where they were.
    import finesse

    katfile = tmp_path / name
    katfile.write_text("\n".join(line for line in (DATA / name).read_text().splitlines()
                                 if "$mfs" not in line))
    assert cli(["convert", str(katfile)]) == 0
    model = finesse.Model()
    model.parse(capsys.readouterr().out)
    values = np.real(np.asarray(model.run()[detector], dtype=complex))
    reference = read_out(DATA / name.replace(".kat", ".out"))
    np.testing.assert_allclose(values, reference[:, column], rtol=1e-9, atol=1e-12)


def test_fixed_laser_gouy_phase_is_refused(capsys) -> None:
    # The front end fixes Finesse 2's laser Gouy phase with a setting KatScript lacks.
    assert cli(["convert", str(DATA / "laser_gouy_cav_modes.kat")]) == 1
    err = capsys.readouterr().err
    assert "line 3: l laser 1 0 n0" in err and "Gouy phase" in err, err


def test_radiation_pressure_with_carriers_off_the_reference_is_refused(capsys) -> None:
    # Mirrors moved by radiation pressure get each carrier's own wavenumber through
    # katparallel's rescaling of Finesse 3's signal matrix, which KatScript cannot write.
    assert cli(["convert", str(DATA / "fsig_mass_sidebands.kat")]) == 1
    err = capsys.readouterr().err
    assert "line 11: attr m2 mass 0.1" in err and "katparallel.finesse2.signals" in err, err


def test_the_library_does_not_import_the_kat_program() -> None:
    # Issue 20 item 16: the Finesse adapter uses the Finesse 2 parser (model.py), not
    # the kat program's modules; lock.py and frontend.py share constructs.py instead
    # of importing each other.
    import subprocess

    code = ("import sys, katparallel.adapters.finesse, katparallel.finesse2.lock\n"
            "print(sorted(m for m in sys.modules if m.startswith('katparallel.finesse2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)  # noqa: S307 - a list of module names printed above
    assert "katparallel.finesse2.model" in loaded
    for module in ("convert", "program", "client", "server"):
        assert f"katparallel.finesse2.{module}" not in loaded, loaded
    code = ("import sys, katparallel.finesse2.lock\n"
            "print('katparallel.finesse2.frontend' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_finesse2_motion_coupling_is_refused(capsys) -> None:
    # An fsig at a beam splitter needs the signal matrix rescaled (signals.py), which
    # KatScript cannot carry: no KatScript rather than one that silently differs.
    assert cli(["convert", str(DATA / "fsig_bs_angles.kat")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "line 13: fsig sig b0 1 0" in captured.err, captured.err
    assert "KatScript cannot express" in captured.err


def test_ad_while_frequencies_move_is_refused(capsys) -> None:
    # The kat program writes Finesse 2's field at the ad's frequency at each point
    # (frequencies.py) from hidden detectors; a Finesse 3 model alone follows a bin.
    assert cli(["convert", str(DATA / "ad_fsig_sweep.kat")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "line 11: ad u 10000001 n2" in captured.err, captured.err
    assert "line 16: ad c 10M n2" not in captured.err  # a carrier's: its bin stays
    assert "line 17: ad afs $fs n2" not in captured.err  # its bin moves with it


def test_finesse2_strain_with_modes_is_refused(capsys) -> None:
    # With modes on, every mode's strain sidebands are written by a fill function
    # (signals.install_strain), which KatScript cannot carry either.
    assert cli(["convert", str(DATA / "fsig_space_modes.kat")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the strain at space 's0' with modes on" in captured.err, captured.err
