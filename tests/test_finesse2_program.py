"""The Finesse-2-compatible ``kat`` program, driven by PyKat through the kat it finds.

Every run goes through a real PyKat and the ``kat`` program PyKat finds (katparallel's
Finesse-3-backed one on machines without Finesse 2). A pykat run costs about 2.5 s,
nearly all of it the ``kat`` process importing Finesse 3, so the models are tiny and
each test runs as few as it needs.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from katparallel.finesse2 import ensure_kat, stop_server, which_kat

# Found without importing pykat, which looks for kat at import time.
PYKAT_FILES = Path(importlib.util.find_spec("pykat").origin).parent
ALIGO_DESIGN = PYKAT_FILES / "ifo" / "aligo" / "files" / "design.kat"
FAKE_VERSION = "Finesse 2.3.1 (2.3.1-0-gabc1234), 05.02.2020"

# Plane-wave Fabry-Perot: two 90 % mirrors, tuning m1.
FABRY_PEROT = """
l l1 {P} 0 n0
s s0 1 n0 n1
m m1 {R1} {T1} 0 n1 n2
s sc 1 n2 n3
m m2 {R2} {T2} 0 n3 n4
pd pcirc n2
pd ptrans n4
ad adt 0 n4
"""
FP = dict(P=2.0, R1=0.9, T1=0.1, R2=0.95, T2=0.05)


@pytest.fixture(scope="module")
def kat_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Make PyKat find a kat (katparallel's, with a private cache) for this module."""
    saved = {k: os.environ.get(k) for k in ("FINESSE_DIR", "XDG_CACHE_HOME")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    kat = ensure_kat()
    yield kat
    stop_server()  # the kat launcher starts a warm server in the private cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_pykat(script: str, **kwargs):
    from pykat import finesse

    kat = finesse.kat()
    kat.verbose = False
    kat.parse(script)
    return kat, kat.run(**kwargs)


def fp_fields(phi_deg: np.ndarray, P: float = FP["P"]) -> tuple[np.ndarray, np.ndarray]:
    """Analytic circulating power and transmitted amplitude for FABRY_PEROT.

    Finesse's conventions: transmission multiplies by i t, the tuning phase of m1 seen
    from its second side is exp(-2i phi), and lengths are whole wavelengths.
    """
    r1, t1 = np.sqrt(FP["R1"]), np.sqrt(FP["T1"])
    r2, t2 = np.sqrt(FP["R2"]), np.sqrt(FP["T2"])
    circ = 1j * t1 * np.sqrt(P) / (1 - r1 * r2 * np.exp(-2j * np.radians(phi_deg)))
    return np.abs(circ) ** 2, 1j * t2 * circ


# --- the command line PyKat uses ---------------------------------------------------

def test_version_line_is_read_by_pykat(kat_env: Path) -> None:
    from pykat import finesse

    proc = subprocess.run([kat_env, "-v"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("Finesse 2.3.0 (2.3.0-katparallel-finesse")
    version = finesse.kat().finesse_version()
    assert version.startswith("2.3.0-katparallel-finesse")
    info = which_kat()
    assert info.path == kat_env and info.is_katparallel and info.source == "FINESSE_DIR"
    assert info.version == version


def test_pipe_protocol(kat_env: Path, tmp_path: Path) -> None:
    katfile = tmp_path / "cav.kat"
    katfile.write_text(FABRY_PEROT.format(**FP) + "xaxis m1 phi lin -10 10 4\n")
    pipe = tmp_path / "pipe"
    start = time.monotonic()
    proc = subprocess.Popen(
        [kat_env, f"--pykat={pipe}", "--no-backspace", "-format=%.15g", katfile],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    while not pipe.exists():
        assert time.monotonic() - start < 5, "PyKat gives up after 5 s without a pipe"
        time.sleep(0.005)
    with open(pipe, encoding="utf-8") as fifo:
        lines = fifo.read().splitlines()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert lines[0].startswith("version:2.3.0-katparallel-finesse")
    assert lines[1:] == ["progress:Calculating\t0\t", "progress:Calculating\t100\t"]
    assert not pipe.exists()
    assert "(build 2.3.0-katparallel-finesse" in out  # what PyKat reads with --perl1
    assert (tmp_path / "cav.out").read_text().count("\n") == 4 + 5


@pytest.mark.parametrize("args", [["-format=%d %d"], ["--trace"], [], ["-cr=maybe", "f.kat"]])
def test_bad_command_line_fails(kat_env: Path, args: list[str]) -> None:
    proc = subprocess.run([kat_env, *args], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("*** Error:")


def test_coupling_reduction_flag_is_accepted() -> None:
    # PyKat's ifo.scan_f runs kat with -cr=on; Finesse 2's numbers do not change.
    from katparallel.finesse2.program import parse_args

    assert parse_args(["-cr=on", "f.kat"]).katfile == Path("f.kat")
    assert parse_args(["-cr=off", "f.kat"]).katfile == Path("f.kat")


def test_perl1_mode_reads_version_from_banner(kat_env: Path) -> None:
    _, out = run_pykat(FABRY_PEROT.format(**FP) + "noxaxis\n", usePipe=False)
    assert out.katVersion.startswith("2.3.0-katparallel-finesse")
    assert out.runtime > 0  # from "computation time:", answering pykat's `time`


# --- physics, through PyKat ---------------------------------------------------------

def test_tutorial_sweep_of_laser_power(kat_env: Path) -> None:
    kat, out = run_pykat("""
        l l1 1 0 n0
        s s0 1 n0 n1
        m m1 0.7 0.3 0 n1 n2
        pd ptrans n2
        xaxis l1 P lin 1 10 9
    """)
    assert out.ylabels == ["ptrans Abs"]
    assert out.xlabel == "l1 P [W]"
    np.testing.assert_array_equal(out.x, np.arange(1.0, 11.0))
    expected = [float("%.15g" % (0.3 * p)) for p in out.x]  # PyKat asks for %.15g
    np.testing.assert_array_equal(out["ptrans"], expected)


def test_tutorial_sweep_of_mirror_transmission(kat_env: Path) -> None:
    # R = 1 - T in Finesse 2 syntax: start at R = 1 and add minus the xaxis value.
    _, out = run_pykat("""
        l l1 2 0 n0
        s s0 1 n0 n1
        m m1 1 0 0 n1 n2
        pd ptrans n2
        xaxis m1 T lin 0 1 4
        put* m1 R $mx1
    """)
    np.testing.assert_array_equal(out.x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(out["ptrans"], 2 * out.x)


def test_fabry_perot_powers_and_phase(kat_env: Path) -> None:
    _, out = run_pykat(FABRY_PEROT.format(**FP) + "xaxis m1 phi lin -30 30 12\n"
                       "yaxis abs:deg\n")
    assert out.ylabels == ["pcirc Abs", "pcirc Phase [Deg]", "ptrans Abs",
                           "ptrans Phase [Deg]", "adt Abs", "adt Phase [Deg]"]
    circ, trans = fp_fields(out.x)
    np.testing.assert_allclose(out["pcirc"].real, circ, rtol=1e-9)
    np.testing.assert_allclose(out["ptrans"].real, FP["T2"] * circ, rtol=1e-9)
    np.testing.assert_allclose(np.abs(out["adt"]), np.abs(trans), rtol=1e-9)
    phase = out.y[:, out.ylabels.index("adt Phase [Deg]")]
    np.testing.assert_allclose(phase, np.degrees(np.angle(trans)), atol=1e-9)


@pytest.mark.parametrize("kind", ["abs", "deg", "re:im", "db"])
def test_yaxis_kinds(kat_env: Path, kind: str) -> None:
    _, out = run_pykat(FABRY_PEROT.format(**FP) + "xaxis m1 phi lin -30 30 3\n"
                       f"yaxis {kind}\n")
    circ, trans = fp_fields(out.x)
    names = {"abs": ["Abs"], "deg": ["Phase [Deg]"], "re:im": ["Re", "Im"],
             "db": ["dB"]}[kind]
    assert out.ylabels == [f"{det} {n}" for det in ("pcirc", "ptrans", "adt")
                           for n in names]
    adt = out.y[:, [i for i, lbl in enumerate(out.ylabels) if lbl.startswith("adt")]]
    expected = {
        "abs": [np.abs(trans)],
        "deg": [np.degrees(np.angle(trans))],
        "re:im": [trans.real, trans.imag],
        "db": [20 * np.log10(np.abs(trans))],
    }[kind]
    np.testing.assert_allclose(adt, np.column_stack(expected), rtol=1e-9, atol=1e-9)
    if kind == "re:im":  # PyKat recombines the two columns
        np.testing.assert_allclose(out["adt"], trans, rtol=1e-9)
        np.testing.assert_allclose(out["pcirc"], circ, rtol=1e-9)


def test_x2axis(kat_env: Path) -> None:
    _, out = run_pykat(FABRY_PEROT.format(**FP) + "xaxis m1 phi lin -30 30 3\n"
                       "x2axis l1 P lin 1 3 2\n")
    np.testing.assert_array_equal(out.x, [-30, -10, 10, 30])
    np.testing.assert_array_equal(out.y, [1, 2, 3])
    assert (out.xlabel, out.ylabel) == ("m1 phi [degrees]", "l1 P [W]")
    assert out.zlabels == ["pcirc Abs", "ptrans Abs", "adt Abs"]
    circ = np.array([fp_fields(out.x, P=p)[0] for p in out.y])
    np.testing.assert_allclose(out["pcirc"], circ, rtol=1e-9)  # shape (x2, x)


def test_noxaxis(kat_env: Path) -> None:
    _, out = run_pykat(FABRY_PEROT.format(**FP) + "noxaxis\n")
    circ, _ = fp_fields(np.zeros(1))
    assert out.ylabels == ["pcirc Abs", "ptrans Abs", "adt Abs"]
    np.testing.assert_allclose(out["pcirc"], circ[0], rtol=1e-9)


# --- errors --------------------------------------------------------------------------

def test_aligo_design_without_detectors_is_refused(kat_env: Path, tmp_path: Path) -> None:
    # Finesse 2 refuses this file too: "no outputs have been specified".
    katfile = tmp_path / "design.kat"
    katfile.write_text(ALIGO_DESIGN.read_text() + "\nnoxaxis\n")
    proc = subprocess.run([kat_env, katfile], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no outputs have been specified" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "design.out").exists()


def test_unimplemented_command_is_an_error(kat_env: Path, tmp_path: Path) -> None:
    katfile = tmp_path / "knm.kat"
    katfile.write_text(FABRY_PEROT.format(**FP) + "knm m1 m1knm\nnoxaxis\n")
    proc = subprocess.run([kat_env, katfile], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "line 10: knm m1 m1knm" in proc.stderr and "not yet implemented" in proc.stderr
    assert not (tmp_path / "knm.out").exists()


# --- a real Finesse 2 always wins ----------------------------------------------------

@pytest.fixture
def fake_finesse2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for a real Finesse 2 ``kat`` that only answers ``-v``."""
    folder = tmp_path / "finesse2"
    folder.mkdir()
    kat = folder / "kat"
    kat.write_text(f"#!/bin/sh\necho '{FAKE_VERSION}'\n")
    kat.chmod(kat.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return kat


def prepend_path(folder: Path) -> str:
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.parametrize("where", ["PATH", "FINESSE_DIR"])
def test_real_finesse2_wins(fake_finesse2: Path, monkeypatch: pytest.MonkeyPatch,
                            where: str) -> None:
    from pykat import finesse

    monkeypatch.delenv("FINESSE_DIR", raising=False)
    if where == "PATH":
        monkeypatch.setenv("PATH", prepend_path(fake_finesse2.parent))
    else:
        monkeypatch.setenv("FINESSE_DIR", str(fake_finesse2.parent))
    assert ensure_kat() == fake_finesse2
    assert os.environ.get("FINESSE_DIR") == (
        None if where == "PATH" else str(fake_finesse2.parent))
    info = which_kat()
    assert (info.path, info.source) == (fake_finesse2, where)
    assert not info.is_katparallel
    assert info.version_line == FAKE_VERSION
    assert finesse.kat().finesse_version() == "2.3.1-0-gabc1234"
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "katparallel").exists()


def test_path_finesse2_beats_empty_finesse_dir(fake_finesse2: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINESSE_DIR", str(tmp_path))  # PyKat alone would fail here
    monkeypatch.setenv("PATH", prepend_path(fake_finesse2.parent))
    assert ensure_kat() == fake_finesse2
    assert os.environ["FINESSE_DIR"] == str(fake_finesse2.parent)


def test_launcher_only_without_finesse2(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINESSE_DIR", raising=False)
    folders = os.environ["PATH"].split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(
        p for p in folders if not Path(p, "kat").is_file()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    launcher = ensure_kat()
    assert launcher.parent == Path(os.environ["FINESSE_DIR"])
    assert launcher.is_relative_to(tmp_path) and os.access(launcher, os.X_OK)
    assert sys.executable in launcher.read_text()
    assert ensure_kat() == launcher  # idempotent, and leaves the file alone
