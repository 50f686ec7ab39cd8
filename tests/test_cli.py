"""The ``katparallel`` command, run as users run it (subprocesses) and in-process."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import katparallel
from katparallel._testing import MPI_ENV, mpiexec_python
from katparallel.cli import main
from katparallel.store import Store

#: Only a deadlock reaches this.
TIMEOUT = 120

MODEL = """\
l L0 P=1
s s0 L0.p1 m.p1 L=1
m m R=0.5 T=0.5
pd P m.p2.o
ad a m.p2.o f=0
"""

PY_MODEL = '''\
import finesse

TEXT = """{model}"""


def factory(values, rng):
    model = finesse.Model()
    model.parse(TEXT)
    return model


def perturb(model, rng):
    model.m.R = 0.3
    model.m.T = rng.uniform(0.1, 0.7)
'''

def katparallel_cmd(*args, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "katparallel", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, **kwargs,
    )


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "cavity.kat"
    path.write_text(MODEL)
    return path


@pytest.mark.timeout(TIMEOUT)
def test_run_show_plot_round_trip(tmp_path, model_file):
    run = [
        "run", model_file, "--vary", "L0.P=1:10:10", "--vary", "m.phi=0,45,90",
        "--backend", "multiprocessing", "--workers", "2", "--seed", "7",
        "--store", "s.db", "--out", "s.nc", "--out", "s.csv",
    ]
    proc = katparallel_cmd(*run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "30 jobs succeeded, 0 failed" in proc.stdout
    assert "job/s" in proc.stderr  # the progress bar
    results = katparallel.load(tmp_path / "s.nc")
    assert results["P"].dims == ("L0.P", "m.phi")
    np.testing.assert_allclose(results["P"].sel({"m.phi": 0}).values, 0.5 * np.linspace(1, 10, 10))
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and set(rows[0]) == {"L0.P", "m.phi", "P", "a.real", "a.imag"}
    assert float(rows[-1]["P"]) == results["P"].values[-1, -1]

    rerun = katparallel_cmd(*run, cwd=tmp_path)  # the store holds everything: nothing reruns
    assert rerun.returncode == 0, rerun.stderr
    with Store(tmp_path / "s.db") as store:
        assert sum(len(r.indices) for r in store.chunk_results()) == 30

    show = katparallel_cmd("show", "s.db", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "30/30 jobs done" in show.stdout and "seed 7" in show.stdout
    assert "m m R=0.5 T=0.5" in show.stdout
    show_nc = katparallel_cmd("show", "s.nc", cwd=tmp_path)
    assert show_nc.returncode == 0 and "outputs   P, a" in show_nc.stdout

    for study, out in (("s.nc", "p.png"), ("s.db", "a.png")):
        plot = katparallel_cmd("plot", study, out[0].upper() if out == "p.png" else "a", "-o", out,
                               cwd=tmp_path)
        assert plot.returncode == 0, plot.stderr
        image = (tmp_path / out).read_bytes()
        assert image.startswith(b"\x89PNG") and len(image) > 10_000


def test_python_model_with_factory_perturb_and_samples(tmp_path, capsys):
    path = tmp_path / "study.py"
    path.write_text(PY_MODEL.format(model=MODEL))
    code = main([
        "run", str(path), "-n", "6", "--sample", "L0.P=normal(1,0.1)", "--seed", "3",
        "--backend", "serial", "-q", "--out", str(tmp_path / "mc.nc"),
    ])
    assert code == 0, capsys.readouterr().err
    results = katparallel.load(tmp_path / "mc.nc")
    power = results["P"].values
    draws = results["L0.P"].values
    assert power.shape == (6,) and np.all(power > 0)
    # perturb drew each job's mirror transmission, so P is not simply half the input power
    transmission = power / draws
    assert np.all((transmission > 0.1) & (transmission < 0.7))
    assert len(np.unique(transmission.round(12))) == 6
    again = main([
        "run", str(path), "-n", "6", "--sample", "L0.P=normal(1,0.1)", "--seed", "3",
        "--backend", "serial", "-q", "--out", str(tmp_path / "mc2.nc"),
    ])
    assert again == 0
    np.testing.assert_array_equal(katparallel.load(tmp_path / "mc2.nc")["P"].values, power)


def test_zip_steps_parameters_together(tmp_path, model_file, capsys):
    code = main([
        "run", str(model_file), "--vary", "m.T=0.1:0.3:3", "--zip", "m.R=0.9:0.7:3",
        "-q", "--out", str(tmp_path / "z.csv"),
    ])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "z.csv") as f:
        rows = list(csv.DictReader(f))
    assert [round(float(r["m.R"]), 12) for r in rows] == [0.9, 0.8, 0.7]
    np.testing.assert_allclose([float(r["P"]) for r in rows], [0.1, 0.2, 0.3], rtol=1e-12)


@pytest.mark.parametrize(
    "args, problem",
    [
        (["run", "missing.kat"], "model file 'missing.kat' does not exist"),
        (["run", "{model}", "--vary", "L0.Q=1,2"], "no parameter 'L0.Q'. Did you mean"),
        (["run", "{model}", "--vary", "L0.P=1:2"], "cannot read values '1:2'"),
        (["run", "{model}", "--vary", "L0.P"], "write PATH=VALUES"),
        (["run", "{model}", "-n", "5", "--sample", "L0.P=gauss(1,2)"], "distribution 'gauss'"),
        (["run", "{model}", "-n", "5", "--sample", "L0.P=normal(1)"], "normal takes 2 numbers"),
        (["run", "{model}", "-n", "5", "--sample", "L0.P=normal(1,-1)"], "sigma must be >= 0"),
        (["run", "{model}", "--sample", "L0.P=normal(1,1)"], "--sample needs -n N"),
        (["run", "{model}", "--zip", "L0.P=1,2"], "needs a --vary before it"),
        (["run", "{model}", "--vary", "L0.P=1", "--backend", "nope"], "Unknown backend 'nope'"),
        (["run", "{model}", "--vary", "L0.P=1", "--retry-failed"], "--retry-failed needs --store"),
        (["run", "{model}", "--vary", "L0.P=1", "--out", "x.txt"], "give a .nc (netCDF) or .csv"),
        (["run", "{model}", "--vary", "L0.P=1", "--store", "{png}"], "not an SQLite database"),
        (["run", "{model}", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "{model}", "--vary", "L0.P=1", "--workers", "0"], "workers must be at least 1"),
        (["run", "{model}", "--vary", "L0.P=1", "--workers", "two"], "not a whole number"),
        (["run", "{model}", "--vary", "L0.P=1", "--timeout", "0"], "a positive number of seconds"),
        (["run", "{model}", "--vary", "L0.P=1", "-b", "pathos", "--timeout", "3"],
         "the 'pathos' backend cannot stop a job"),
        (["run", "{model}", "--vary", "L0.P=1", "--analysis", "bogus(1)"],
         "Could not read the analysis 'bogus(1)'"),
        (["run", "{model}", "--vary", "L0.P=1", "--out", "nowhere/x.nc"],
         "the directory 'nowhere' does not exist"),
        (["show", "missing.db"], "'missing.db' does not exist"),
        (["plot", "{png}", "P"], "neither a katparallel store nor a results file"),
    ],
)
def test_bad_arguments_exit_2_with_one_error_line(
    tmp_path, model_file, capsys, monkeypatch, args, problem
):
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    argv = [a.format(model=model_file, png=png) for a in args]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("katparallel") and ": error: " in last and problem in last, err


def test_info_lists_versions_backends_and_kat(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("katparallel", "finesse", "pykat", "python", "cpus", "kat "):
        assert word in out
    backends_line = next(line for line in out.splitlines() if line.startswith("backends"))
    assert "serial" in backends_line and "multiprocessing" in backends_line


def test_console_script_help_has_examples():
    script = Path(sys.executable).with_name("katparallel")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and "mpiexec" in proc.stdout


@pytest.mark.timeout(TIMEOUT)
def test_cli_under_mpiexec_matches_serial(tmp_path, model_file):
    study = ["run", str(model_file), "--vary", "L0.P=1:2:6", "--vary", "m.phi=0,90", "--seed", "3",
             "-q"]
    env = {**os.environ, **MPI_ENV}
    proc = subprocess.run(
        mpiexec_python(3, "-m", "katparallel", *study, "--backend", "mpi",
                       "--store", "m.db", "--out", "m.nc"),
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "on mpi (2 workers)" in proc.stdout
    serial = katparallel_cmd(*study, "--backend", "serial", "--out", "s.nc", cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr
    mpi, reference = katparallel.load(tmp_path / "m.nc"), katparallel.load(tmp_path / "s.nc")
    for name in reference.outputs:
        np.testing.assert_array_equal(mpi[name].values, reference[name].values)
    with Store(tmp_path / "m.db") as store:
        assert store.progress() == (12, 12)


def test_edited_perturb_function_is_not_resumed_as_the_same_study(tmp_path, capsys):
    path = tmp_path / "study.py"
    path.write_text(PY_MODEL.format(model=MODEL))
    argv = ["run", str(path), "-n", "3", "--seed", "1", "-q", "--backend", "serial",
            "--store", str(tmp_path / "p.db")]
    assert main(argv) == 0
    path.write_text(PY_MODEL.format(model=MODEL).replace("uniform(0.1, 0.7)", "uniform(0.2, 0.7)"))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds a different study: the perturb" in last and "new store path" in last


FINISHED_BAR = """
from katparallel.runner import progress_bar
with progress_bar(3, "serial") as bar:
    bar.update(3)
"""


def test_the_finished_progress_bar_stays_on_screen():
    """tqdm redraws the bar after each carriage return; a cleared bar ends in blanks."""
    proc = subprocess.run([sys.executable, "-c", FINISHED_BAR], capture_output=True,
                          timeout=TIMEOUT)  # bytes: text mode would read "\r" as a newline
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.decode().rsplit("\r", 1)[-1]
    assert last.startswith("serial: 100%") and "3/3 [" in last and "job/s]" in last, repr(last)
    assert last.endswith("\n")


@pytest.mark.timeout(TIMEOUT)
def test_a_csv_that_cannot_hold_the_outputs_loses_nothing(tmp_path, model_file):
    """An xaxis per job gives no scalar output: the CSV fails after the run, not the .nc."""
    study = ["run", model_file, "--vary", "m.phi=0,90", "--analysis",
             "xaxis(L0.P, lin, 1, 10, 3)", "-b", "serial", "-q"]
    both = katparallel_cmd(*study, "--out", "s.csv", "--out", "s.nc", cwd=tmp_path)
    assert both.returncode == 2
    assert "--out 's.csv': No output holds one value per job" in both.stderr
    assert "The results are in s.nc" in both.stderr
    assert katparallel.load(tmp_path / "s.nc")["P"].shape == (2, 4)

    only_csv = katparallel_cmd(*study, "--out", "t.csv", cwd=tmp_path)
    assert only_csv.returncode == 2 and "The results are in t.nc" in only_csv.stderr
    assert katparallel.load(tmp_path / "t.nc")["P"].shape == (2, 4)


def test_an_internal_error_shows_its_traceback(tmp_path, model_file, monkeypatch):
    """Only bad arguments exit 2; a bug is not dressed up as a usage error."""
    from katparallel.results import Results

    def broken_save(self, path):
        raise ValueError("a bug while saving")

    monkeypatch.setattr(Results, "save", broken_save)
    with pytest.raises(ValueError, match="a bug while saving"):
        main(["run", str(model_file), "--vary", "L0.P=1,2", "-b", "serial", "-q",
              "--out", str(tmp_path / "r.nc")])
