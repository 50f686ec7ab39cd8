"""What the Finesse 2 front end refuses, and how: the line, the construct, exit 1.

The ``kat`` program runs in this process, as its warm server runs it. A refusal must
name the line and the construct, leave no output file and never be a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from katparallel.finesse2 import program

CAVITY = """\
l L0 1 0 n0
s s1 1 n0 n1
m m1 0.9 0.1 0 n1 n2
s s2 1 n2 n3
m m2 0.9 0.1 0 n3 n4
pd P n2
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture, text: str) -> tuple[int, str]:
    katfile = tmp_path / "f.kat"
    katfile.write_text(text)
    status = program.main([str(katfile)])
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("extra", "line", "construct"), [
    ("pd1 err 10M 0 n2\nlock z $err 1 1n\nput* m1 phi $z\n", 8, "lock"),  # no set
    ("pd1 err 10M 0 n2\nlock z $e 1 1n\nset e err re\n", 8, "lock"),  # set after
    ("pd1 err 10M 0 n2\nset e err re\nlock z $e 1 fine\n", 9, "lock"),
    ("pd1 err 10M 0 n2\nset e err re\nlock z $e 1 0\n", 9, "lock"),
    ("pd1 err 10M 0 n2\nset e err re\nlock z $e 1 1n\nlock z $e 1 1n\n", 10, "lock"),
    ("pd1 err 10M 0 n2\nset e err re\nfunc f = $z\nlock z $e 1 1n\n", 9, "func"),
    ("beam b1 n2\nset e b1 re\nlock z $e 1 1n\nxaxis b1 x lin -1 1 4\n", 9, "lock"),
    ("func f = 2*$nosuch\n", 7, "func"),
    ("pd1 err 10M 0 n2\nset e err re\nfunc f = 2*$e\nput m1 phi $f\n", 10, "put"),
    ("qhd h 180 n2 n3\n", 7, "qhd"),  # no fsig: Finesse 2 writes 0 (inf for qhdN)
    ("fsig sig L0 1 0\nqhdS h 180 n2\n", 8, "qhdS"),
    ("fsig sig L0 1 0\nq2hd h f1 n2 n3\n", 8, "q2hd"),  # mixed: not measured
    # A func or lock would read Finesse 3's noise, not Finesse 2's.
    ("fsig sig L0 1 0\nqhd h 180 n2 n3\nset e h re\n", 9, "set"),
    ("fsig sig L0 1 0\nqnoisedN q 1 $fs 0 n2\nset e q re\n", 9, "set"),
    ("pd1 p 10M max n2\nset e p re\n", 8, "set"),
    ("fsig sig s2 amp 1 0\npd1 S 1 n2\n", 7, "fsig sig s2 amp"),
    ("mod eom 10M 0.1 1 pm n0 n5\nfsig sig eom phase 1 0\n", 8, "fsig sig eom phase"),
    ("mod eom 10M 0.1 1 am n4 n5\nfsig sig eom amp 1 0\n", 8, "fsig sig eom amp"),
    # Finesse 2's xd of a massless mirror an fsig moves is 0.
    ("fsig sig m2 1 0\nxd z m2 z\n", 8, "xd"),
    # A lock with a signal at a modulator was not measured.
    ("mod eom 10M 0.1 1 pm n4 n5\nfsig sig eom amp 1 0\npd1 err 10M 0 n2\n"
     "set e err re\nlock z $e 1 1n\nput* m1 phi $z\n", 11, "lock"),
    # A beam splitter's motion with a mass (issue 19 item 3).
    ("bs b 0.5 0.5 0 45 n4 n5 n6 n7\nfsig sig b 1 0\nattr b mass 1\n", 8, "fsig"),
    ("bs b 0.5 0.5 0 45 n4 n5 n6 n7\nfsig sig L0 1 0\nattr b mass 1\n"
     "mod eom 10M 0.1 1 pm n0 n9\n", 9, "attr"),
    # Finesse 3's signal sidebands go wrong when a laser's or modulator's frequency
    # changes.
    ("fsig sig L0 amp 1 0\nx2axis L0 f lin 0 1M 1\n", 8, "x2axis"),
    ("mod eom 10M 0.1 1 pm n4 n5\nfsig sig L0 amp 1 0\nx2axis eom f lin 9M 10M 1\n",
     9, "x2axis"),
    ("fsig sig m2 phase 1 0\npd1 S 1 n2\n", 7, "fsig sig m2 phase"),
    # Without fsig Finesse 3 wrote no column for these (issue 19's siblings). RF
    # demodulations first: Finesse 2's qnoised with two differs from its own qshot
    # where nothing can make them differ; two in an S or N form need a pd3; at most
    # two; Finesse 2 refuses negative ones; a swept RF phase would miss its sign; with
    # modes on, the carriers' frequencies must stay fixed.
    ("qshot q 1 10M 0 n2\n", 7, "qshot"),
    ("qnoisedS q 1 10M 0 n2\n", 7, "qnoisedS"),
    ("fsig sig L0 1 0\nqnoised q 3 10M 0 3M 0 $fs 0 n2\n", 8, "qnoised"),
    ("fsig sig L0 1 0\nmod eom 10M 0.1 1 pm n4 n5\nqshot q 2 10M 0 $fs n2\n"
     "maxtem 1\nxaxis eom f lin 1M 2M 2\n", 11, "xaxis"),
    ("fsig sig L0 1 0\nqshotS q 3 10M 0 20M 0 $fs n2\n", 8, "qshotS"),
    ("fsig sig L0 1 0\nqshot q 4 1M 0 2M 0 3M 0 $fs n2\n", 8, "qshot"),
    ("fsig sig L0 1 0\nqnoised q 2 -10M 0 $fs n2\n", 8, "qnoised"),
    ("fsig sig L0 1 0\nqnoised q 2 10M x $fs n2\n", 8, "qnoised"),
    ("fsig sig L0 1 0\nqnoised q 2 $fs 0 10M 0 n2\n", 8, "qnoised"),
    ("fsig sig L0 1 0\nqnoised q 2 10M 0 $fs n2\nxaxis q phase1 lin 0 90 2\n", 9,
     "xaxis"),
    ("fsig sig L0 1 0\nqshot q 1 10M 0 n2\n", 8, "qshot"),
    ("fsig sig L0 1 0\nqnoisedS q 0 10M n2\n", 8, "qnoisedS"),
    ("fsig sig L0 1 0\nqshotN q 3 10M 0 20M 0 $fs n2\n", 8, "qshotN"),
    ("fsig sig L0 1 0\nxaxis sig phase lin 0 90 2\n", 8, "xaxis"),
    ("pd1 err 10M 0 n2\nset e err abs\n", 8, "set"),
    ("attr m1 r_ap 0.01\nmaxtem 1\ncav c m1 n2 m2 n3\n", 7, "r_ap"),
    ("maxtem 1\ncav c m1 n2 m2 n3\nx2axis m2 r_ap lin 1m 2m 1\n", 9, "r_ap"),
    # A cav (or gauss, bp, beam) alone implies maxtem 0, where Finesse 2 clips the
    # TEM00 mode (issue 19 item 8: the tracer's error before, a silent miss after).
    ("attr m1 r_ap 0.1\ncav c m1 n2 m2 n3\n", 7, "r_ap"),
    ("cav c m1 n2 m2 n3\nx2axis m1 r_ap lin 1m 2m 1\n", 8, "r_ap"),
    ("attr m1 r_ap 0.1\nbeam b n2\n", 7, "r_ap"),
    ("beam b n2\nmaxtem off\n", 7, "beam"),  # Finesse 2 refuses this too
    ("scale furlong P\n", 7, "scale"),
    ("fsig sig 1\ntf sus1 1 0 p 1 1000\nattr m2 zmech sus1\n", 9, "attr zmech"),
    ("pd3 Q 10M max 20M 0 1k 0 n2\n", 7, "pd3"),
    ("pd2 Q 10M max 20M $x n2\n", 7, "pd2"),
    ("beam b1 n2\nxaxis b1 x lin -1 1 4\nx2axis b1 y lin -1 1 2\n", 9, "x2axis"),
    # Finesse 2 refuses these too: attr sets no R, phi or L; a mirror's Rc is swept
    # or put through Rcx and Rcy; a mirror has no L to sweep or put.
    ("attr m1 r 0.5\n", 7, "attr"),
    ("attr m1 Rc 10 PHI 10\n", 7, "attr"),
    ("attr m1 mass 0\n", 7, "attr"),
    ("attr s2 L 10\n", 7, "attr"),
    ("xaxis m2 RC lin 1 10 2\n", 7, "xaxis"),
    ("func f = 10\nput m2 rc $f\n", 8, "put"),
    ("xaxis m2 L lin 0 0.01 2\n", 7, "xaxis"),
    ("func f = 0.01\nput m1 l $f\n", 8, "put"),
    # Finesse 2 refuses these too: bp measures no divergence, and needs modes.
    ("bp b x div n2\n", 7, "bp"),
    ("bp b x w n2\nmaxtem off\n", 7, "bp"),
])
def test_refusal_names_line_and_construct(tmp_path: Path, capsys, extra: str, line: int,
                                          construct: str) -> None:
    status, err = run(tmp_path, capsys, CAVITY + extra + "xaxis m1 phi lin 0 90 2\n")
    assert status == 1
    assert f"line {line}: " in err and f"'{construct}'" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "f.out").exists()


def test_quirk_is_said_once(tmp_path: Path, capsys) -> None:
    status, err = run(tmp_path, capsys, CAVITY + "xaxis m1 phi lin 0 90 10_000\n")
    assert status == 0
    assert err.count("'10_000' as 10") == 1
    assert len((tmp_path / "f.out").read_text().splitlines()) == 4 + 11


def test_flat_attr_on_a_missing_component(tmp_path: Path, capsys) -> None:
    status, err = run(tmp_path, capsys, CAVITY + "attr m9 Rc 0\nnoxaxis\n")
    assert status == 1
    assert "line 7: " in err and "no component named 'm9'" in err


def test_several_traces_with_homs_are_followed(tmp_path: Path, capsys) -> None:
    # Finesse 2's own beam trace is reproduced (katparallel.finesse2.trace), and said.
    text = (Path(__file__).parent / "data" / "finesse2" / "homs_by_cav.kat").read_text()
    status, err = run(tmp_path, capsys, text)
    assert status == 0 and "Warning" not in err
    assert "line 16: 2 cav/gauss commands" in err and "katparallel follows it" in err
    status, err = run(tmp_path, capsys, text + "maxtem off\n")
    assert status == 0 and "cav/gauss" not in err


def test_gauss_inside_a_cavity_is_refused(tmp_path: Path, capsys) -> None:
    # Finesse 2 lets a gauss override a cavity's own beam at its node (before or
    # after the cav command); Finesse 3 refuses a Gauss on a cavity's round trip.
    status, err = run(tmp_path, capsys, CAVITY + "gauss g m2 n3 1m 0.3\n"
                      "attr m2 Rc 2\ncav c m1 n2 m2 n3\nmaxtem 1\nnoxaxis\n")
    assert status == 1
    assert "line 7: " in err and "'gauss'" in err and "cavity's round trip" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "f.out").exists()


def test_mechanics_without_fsig_are_left_out(tmp_path: Path, capsys) -> None:
    # Without fsig, Finesse 2 computes no signal sidebands: tf and zmech change nothing.
    extra = "tf sus1 1 0 p 1 1000\nattr m2 zmech sus1\nattr m1 rxmech sus1\n"
    status, err = run(tmp_path, capsys, CAVITY + extra + "noxaxis\n")
    assert status == 0, err
    assert err.count("without fsig") == 1 and "line 7: " in err


def test_a_kat_ini_that_changes_results_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """Finesse 2 reads ./kat.ini (else $KATINI); this kat follows the standard one."""
    katfile = tmp_path / "beam.kat"
    katfile.write_text("l L0 1 0 n0\ns s0 1 n0 n1\ngauss g1 L0 n0 1m 0\nbp w x w n1\nnoxaxis\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KATINI", raising=False)
    (tmp_path / "kat.ini").write_text("lambda 1.064E-6  # standard\nlocksteps 10000\n")
    assert program.main([str(katfile)]) == 0
    (tmp_path / "kat.ini").write_text("clight 299792458.0\nlambda 6.33E-7   # a HeNe\n")
    assert program.main([str(katfile)]) == 1
    err = capsys.readouterr().err
    assert "sets 'lambda 6.33E-7'" in err and "remove that line, or run a real Finesse 2" in err
    (tmp_path / "kat.ini").unlink()
    elsewhere = tmp_path / "ini"
    elsewhere.mkdir()
    (elsewhere / "kat.ini").write_text("sequential 0\n")
    monkeypatch.setenv("KATINI", str(elsewhere / "kat.ini"))
    assert program.main([str(katfile)]) == 1
    assert "sets 'sequential 0'" in capsys.readouterr().err


@pytest.mark.parametrize("extra", ["attr m1 r 0.5\n", "xaxis m2 Rc lin 1 10 2\n",
                                   "bp b x s n2\n"])
def test_what_finesse2_refuses_is_said_so(tmp_path: Path, capsys, extra: str) -> None:
    status, err = run(tmp_path, capsys, CAVITY + extra + "xaxis m1 phi lin 0 90 2\n")
    assert status == 1 and "(Finesse 2 refuses it too" in err, err


def test_an_unchecked_command_is_said(tmp_path: Path, capsys) -> None:
    # 'lambda' has no reference made with Finesse 2: the file runs, and it is said.
    status, err = run(tmp_path, capsys, CAVITY + "lambda 1.064u\nlambda 1.064u\n"
                      "xaxis m1 phi lin 0 90 2\n")
    assert status == 0, err
    assert err.count("has not been checked against Finesse 2.3.1") == 1, err
    assert "line 7: 'lambda'" in err
    status, err = run(tmp_path, capsys, CAVITY + "GNUPLOT\nset xlabel 'x'\nEND\n"
                      "gnuterm no\nxaxis m1 phi lin 0 90 2\n")
    assert "has not been checked" not in err, err  # plot settings change no number


def test_every_checked_command_has_its_reference() -> None:
    # The table of checked commands names, for each, a file the reference test runs.
    from katparallel.finesse2.frontend import ALIASES, CHECKED

    data = Path(__file__).parent / "data" / "finesse2"
    for command, name in CHECKED.items():
        assert (data / name).with_suffix(".out").exists(), name
        text = (data / name).read_text()
        if name.endswith(".extra"):  # appended to PyKat's aLIGO design file
            import importlib.util
            design = (Path(importlib.util.find_spec("pykat").origin).parent
                      / "ifo" / "aligo" / "files" / "design.kat")
            text = design.read_text() + text
        commands = {line.split()[0] for line in text.splitlines() if line.split()}
        assert command in commands, (command, name)
    assert all(target in CHECKED for target in ALIASES.values())


def test_a_detector_without_output_is_an_error() -> None:
    # Without fsig Finesse 3 computes nothing for a qshot (the front end refuses it);
    # should such a detector reach a run, the kat must say so, not drop its column.
    import finesse

    from katparallel.finesse2.frontend import translate

    text = CAVITY + "qshot q 1 10M 0 n2\nxaxis m1 phi lin 0 90 2\n"
    model = finesse.Model()
    model.parse_legacy(text)
    with pytest.raises(program.KatError) as info:
        program.simulate(model, text, translate(CAVITY + "xaxis m1 phi lin 0 90 2\n"))
    assert "no output for detector 'q'" in str(info.value.problems), info.value.problems


def test_a_put_finesse3_refuses_is_a_refusal(tmp_path: Path, capsys) -> None:
    # A var put onto from its own value: Finesse 3 refuses the self-reference.
    status, err = run(tmp_path, capsys, CAVITY + "var v 0\nset vre v re\n"
                      "func f = 10 * $vre\nput v re $f\nxaxis v re lin 0 1 2\n")
    assert status == 1 and "Traceback" not in err
    assert "line 10: " in err and "self-referencing" in err, err


def test_qhd_without_fsig_says_what_finesse2_writes(tmp_path: Path, capsys) -> None:
    text = CAVITY + "qhdN h 180 n2 n3\nxaxis m1 phi lin 0 90 2\n"
    status, err = run(tmp_path, capsys, text)
    assert status == 1
    assert "it writes 0 for qhd and qhdS, inf for qhdN" in err, err


DUMP_NOISE = """\
l l1 1 0 0 n0
bs b 0.5 0.5 0 0 n0 n1x n1 {port}
s s1 1 n1x n2
fsig sig l1 amp 1 0 1
{detector}
xaxis sig f log 1 100 2
"""


@pytest.mark.parametrize(("port", "detector", "said"), [
    # Finesse 2.3.1: qnoised 3.055e-10 here, where Finesse 3 gives 4.321e-10 (the
    # vacuum of the dump port); with an ordinary open node both give 4.321e-10.
    ("dump", "qnoised qn 1 $fs 0 n2", True),
    ("nfree", "qnoised qn 1 $fs 0 n2", False),
    ("dump", "qshot qs 1 $fs 0 n2", False),  # shot noise of the DC power: agrees
])
def test_a_dump_node_with_quantum_noise_is_said(tmp_path: Path, capsys, port: str,
                                                detector: str, said: bool) -> None:
    status, err = run(tmp_path, capsys, DUMP_NOISE.format(port=port, detector=detector))
    assert status == 0, err
    assert ("line 2: a 'dump' node with quantum noise (line 5)" in err) == said, err


@pytest.mark.parametrize(("extra", "why"), [
    ("qd q 0 0 n2\nnoxaxis\n", "without fsig"),  # Finesse 2 writes 0
    ("fsig sig L0 amp 1 0\nqd q 10M 0 n2\nxaxis sig f lin 1 2 1\n", "f = 0"),
    ("fsig sig L0 amp 1 0\nqd q 0 fine n2\nxaxis sig f lin 1 2 1\n", "expected 'qd name"),
    ("fsig sig L0 amp 1 0\nqd q 0 0 n2\nmaxtem 0\nxaxis sig f lin 1 2 1\n", "modes"),
])
def test_qd_is_refused_where_never_measured(tmp_path: Path, capsys, extra: str,
                                            why: str) -> None:
    status, err = run(tmp_path, capsys, CAVITY + extra)
    assert status == 1 and "'qd'" in err and why in err, err
    assert "Traceback" not in err and not (tmp_path / "f.out").exists()

def test_motion_coupling_refused_on_an_unchecked_finesse(tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    # The rescaling of Finesse 3's motion blocks leans on its internals: on a Finesse 3
    # it was not checked against, a file that needs it is refused, not computed.
    from katparallel.finesse2 import signals

    monkeypatch.setattr(signals, "CHECKED_FINESSE", ("0.0.0",))
    status, err = run(tmp_path, capsys, CAVITY + "mod eom 10M 0.1 1 pm n4 n5\n"
                      "fsig sig m2 1 0\nxaxis sig f lin 1 10 1\n")
    assert status == 1
    assert "line 8: " in err and "'fsig'" in err and "only on Finesse 0.0.0" in err, err
    assert "Traceback" not in err and not (tmp_path / "f.out").exists()
    status, err = run(tmp_path, capsys, CAVITY + "fsig sig m2 1 0\n"
                      "xaxis sig f lin 1 10 1\n")
    assert status == 0, err  # every carrier at the reference: nothing to rescale


def test_radiation_pressure_with_rf_sidebands_is_noted(tmp_path: Path, capsys) -> None:
    # Agrees on single cavities (fsig_mass_rf*), not to 1e-9 on PyKat's aLIGO design.
    status, err = run(tmp_path, capsys, CAVITY + "mod eom 10M 0.1 1 pm n4 n5\n"
                      "attr m2 mass 1\nfsig sig L0 amp 1 0\nxaxis sig f lin 1 10 1\n")
    assert status == 0, err
    assert "line 8: radiation pressure" in err and "9e-8" in err, err
