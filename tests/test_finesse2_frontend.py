"""What the Finesse 2 front end refuses, and how: the line, the construct, exit 1.

The ``kat`` program runs in this process, as its warm server runs it. A refusal must
name the line and the construct, leave no output file and never be a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    # Finesse 3's signal sidebands go wrong when a laser's or modulator's frequency
    # changes.
    ("fsig sig L0 amp 1 0\nx2axis L0 f lin 0 1M 1\n", 8, "x2axis"),
    ("mod eom 10M 0.1 1 pm n4 n5\nfsig sig L0 amp 1 0\nx2axis eom f lin 9M 10M 1\n",
     9, "x2axis"),
    ("fsig sig m2 phase 1 0\npd1 S 1 n2\n", 7, "fsig sig m2 phase"),
    # Finesse 2 refuses a tem above maxtem (off or none: order 0) too.
    ("tem L0 1 0 0.5 0\n", 7, "tem"),
    ("tem L0 1 1 0.5 0\nmaxtem 1\n", 7, "tem"),
    # A carrier's frequency varying under a signal.
    ("fsig sig L0 amp 1 0\nxaxis L0 f lin 0 1G 2\n", 8, "xaxis"),
    ("fsig sig L0 amp 1 0\nmod eom 10M 0.1 1 pm n4 n5\nfunc f = 12M\nput eom f $f\n",
     10, "put"),
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
qnoised qn 1 $fs 0 n2
qshot qs 1 $fs 0 n2
{modes}
xaxis sig f log 1 100 2
"""


def noise_columns(tmp_path: Path, capsys, port: str, modes: str = "") -> np.ndarray:
    status, err = run(tmp_path, capsys, DUMP_NOISE.format(port=port, modes=modes))
    assert status == 0, err
    assert "dump" not in err, err  # no warning: the dump is reproduced
    return np.loadtxt(tmp_path / "f.out", comments="%")[:, 1:]


def test_a_dump_node_lets_no_vacuum_in_without_modes(tmp_path: Path, capsys) -> None:
    # Behind a 50/50 beam splitter half the vacuum comes through the dump port: Finesse
    # 2.3.1 writes qnoised 3.055e-10 there, an open port's 4.321e-10 times sqrt(1/2)
    # (the legacy parser's open port gave 4.321e-10). qshot, shot noise of the DC
    # power, is the same; with modes on Finesse 2's dump is an open port.
    dump, open_port = (noise_columns(tmp_path, capsys, port)
                       for port in ("dump", "nfree"))
    assert np.allclose(dump[:, 0], open_port[:, 0] * np.sqrt(0.5), rtol=1e-12, atol=0)
    assert np.allclose(dump[:, 1], open_port[:, 1], rtol=1e-12, atol=0)
    modes = "gauss g1 l1 n0 1m 0\nmaxtem 0"
    dump, open_port = (noise_columns(tmp_path, capsys, port, modes)
                       for port in ("dump", "nfree"))
    assert np.allclose(dump, open_port, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("line", "construct"), [
    ("s s9 1 n2 dump", "s"), ("mod eo 10M 0.1 1 pm n2 dump", "mod"),
    ("isol i1 100 n2 dump", "isol"), ("lens f1 10 n2 dump", "lens"),
    ("l l2 1 0 dump", "l"), ("sq q1 0 10 0 dump", "sq"),
])
def test_a_dump_node_finesse2_refuses_is_refused(tmp_path: Path, capsys, line: str,
                                                  construct: str) -> None:
    text = DUMP_NOISE.format(port="nfree", modes=line)
    status, err = run(tmp_path, capsys, text)
    assert status == 1
    assert f"line 7: {line}" in err and f"'{construct}': a dump node here" in err, err
    assert "Traceback" not in err and not (tmp_path / "f.out").exists()


DUMPED_MASS = """\
l l1 1 0 n0
s s1 1 n0 n5
m mi 0.9 0.1 0 n5 n6
s sc 1 n6 n7
{mirror}
attr me M 1
fsig sig l1 amp 1 0 1
{extra}
"""


@pytest.mark.parametrize(("mirror", "extra"), [
    # Finesse 2 leaves the light going into a dump out of the radiation pressure: the
    # kat folds T into loss (fsig_mass_dump.kat), but not where that changes noise,
    # where T is swept, or at a beam splitter.
    ("m me 0.99 0.009 10 n7 dump", "qnoised q 1 $fs 0 n5\nxaxis sig f log 1 1k 3"),
    ("m me 0.99 0.009 10 n7 dump", "pd1 p $fs n5\nxaxis me T lin 0.001 0.009 2"),
    ("bs me 0.99 0.009 10 0 n7 n8 dump n9", "pd1 p $fs n5\nxaxis sig f log 1 1k 3"),
])
def test_radiation_pressure_at_a_dump_is_refused_where_not_reproduced(
        tmp_path: Path, capsys, mirror: str, extra: str) -> None:
    text = DUMPED_MASS.format(mirror=mirror, extra=extra)
    status, err = run(tmp_path, capsys, text)
    assert status == 1
    assert "line 6: attr me M 1" in err and "'me' moves under radiation" in err, err
    status, err = run(tmp_path, capsys, text.replace("attr me M 1", "attr mi M 1"))
    assert status == 0, err  # no force on the dumped component: reproduced


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
    # Agrees on single cavities (fsig_mass_rf*); on PyKat's aLIGO design a residual
    # transfer function differs by rounding (test_finesse2_reference: aligo_darm).
    status, err = run(tmp_path, capsys, CAVITY + "mod eom 10M 0.1 1 pm n4 n5\n"
                      "attr m2 mass 1\nfsig sig L0 amp 1 0\nxaxis sig f lin 1 10 1\n")
    assert status == 0, err
    assert "line 8: radiation pressure" in err and "7.7e-8" in err, err
    assert "one ulp longer" in err and "residual" in err, err


@pytest.mark.parametrize("extra, line, words", [
    # A demodulation while a modulator's frequency moves the carriers' beats: Finesse 2
    # demodulates the beats of each point (ad_mod_sweep has the ads alone).
    ("mod eom 10M 0.1 1 pm n4 n5\npd1 p 10M 0 n5\nx2axis eom f lin 9M 11M 2\n", 8,
     "'p' demodulates while"),
    # The signal frequency meets a carrier beat (fs = f_mod) or half of one.
    ("mod eom 10M 0.1 1 pm n4 n5\nfsig sig m2 9M 0\npd2 q 10M 0 $fs n5\n"
     "x2axis sig f lin 9M 11M 2\n", 8, "signal frequency, or twice it"),
    ("mod eom 10M 0.1 1 pm n4 n5\nfsig sig m2 4M 0\npd1 q $fs 0 n5\n"
     "x2axis sig f lin 4M 6M 2\n", 8, "signal frequency, or twice it"),
    # An ad where fs = f_mod with modes on: Finesse 3's ad of all modes is no field.
    ("mod eom 10M 0.1 1 pm n4 n5\nfsig sig m2 9M 0\nad a 10M n5\nmaxtem 1\n"
     "x2axis sig f lin 9M 11M 2\n", 9, "with higher-order modes on"),
    # A laser swept from another's frequency: no interference at the start in Finesse 3.
    ("l L1 1 0 n9\ns s9 1 n9 n4\nx2axis L1 f lin 0 1 1\n", 9, "starts at another"),
    # A function or lock would read Finesse 3's bin, not Finesse 2's field.
    ("fsig sig m2 1 0\nad a 2 n2\nset s a re\nx2axis sig f lin 1 2 1\n", 9,
     "'s' reads amplitude detector 'a'"),
    # A numeric demodulation frequency that is the signal frequency at one point only.
    ("fsig sig L0 amp 1 0\npd1 p 5 0 n2\nx2axis sig f lin 1 9 2\n", 8,
     "'p' demodulates at numbers"),
    # Two lasers' light meeting at one frequency (Finesse 2 lets it interfere).
    ("l L1 1 1 n9\ns s9 1 n9 n4\nx2axis L1 f lin -1 1 2\n", 9, "light meets at one"),
])
def test_frequencies_meeting_during_a_run_are_refused(tmp_path: Path, capsys, extra: str,
                                                      line: int, words: str) -> None:
    # katparallel.finesse2.frequencies: outputs whose meaning depends on which
    # frequencies exist at each point, where Finesse 3 cannot follow Finesse 2.
    status, err = run(tmp_path, capsys, CAVITY + extra + "xaxis m1 phi lin 0 90 2\n")
    assert status == 1
    assert f"line {line}: " in err and words in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "f.out").exists()


@pytest.mark.parametrize(("modes", "warned"), [
    ("maxtem 2", True), ("maxtem 1", True), ("maxtem 0", False), ("maxtem off", False)])
def test_quantum_noise_with_modes_is_warned_about(modes: str, warned: bool) -> None:
    # Finesse 3's noise with higher-order modes keeps rounding Finesse 2's has not
    # (aligo_sensitivity_modes: 2e-8 at 5 kHz), so the kat says so before any output.
    from katparallel.finesse2.frontend import translate

    text = (Path(__file__).parent / "data" / "finesse2" / "qnoise_homs.kat").read_text()
    text = text.replace("maxtem 2", modes)
    if not warned:  # HG10 light needs modes
        text = text.replace("tem laser 1 0 0.2 0\n", "# no HG10 light\n")
    warnings = translate(text).warnings
    noted = [w for w in warnings if "quantum noise with higher-order modes" in w]
    assert bool(noted) is warned, warnings
    if warned:
        assert noted[0].startswith("line 18: ") and f"({modes})" in noted[0], noted
    assert not [w for w in translate(text.replace("qnoised qn 1 $fs 0 n1\n", "").replace(
        "qshot qs 1 $fs 0 n4\n", "")).warnings if "quantum noise" in w]
