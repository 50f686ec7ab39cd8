"""Measure katparallel's ``kat`` against a real Finesse 2 on a corpus of kat files.

Usage::

    python benchmarks/finesse2_corpus.py /path/to/finesse2/kat CORPUS_DIR

For every ``*.kat`` under CORPUS_DIR (the corpus lives outside the repository), both
programs run in a scratch directory. A file without ``xaxis``/``noxaxis`` gets a
``noxaxis`` line appended, as PyKat does; a file without detectors (PyKat's design
files) gets a ``pd`` at each node of its first 40 spaces, both directions, so that
there is something to compare. Real Finesse 2 reads a ``kat.ini`` next to
its binary, copied into the scratch directory with ``lambda 1.064E-6``. Files Finesse 2
itself refuses are left out. Each remaining file is counted as

* ``agree``: same shape, every number within 1e-9 relative (to the larger of the two
  values, or of the column's largest value for numbers near zero, or of the table's
  largest value in a column Finesse 2 writes as exact zeros), phases modulo 360;
* ``differ``: both ran, numbers or shape differ; Finesse 2 then runs once more with
  every length one ulp longer (:func:`one_ulp_longer`), and the line says how far its
  own numbers move: a file that moves Finesse 2 by more than 1e-9 under such a change
  is ill-conditioned, and a difference below that is rounding, not a different model;
* ``refuse``: katparallel's kat exits 1 with its message;
* ``traceback``: katparallel's kat raised a Python exception;
* ``too slow``: katparallel's kat took longer than ``--timeout`` seconds (600 by
  default; it runs in a forked child, which is then stopped).

Files Finesse 2 refuses, or takes more than two minutes on, are counted apart, and so
are files whose locks Finesse 2 itself gives up on ("Stopped lock iteration after 10000
steps!"): its numbers are then wherever the iteration stopped (a lock at 1e80 degrees
in PyKat's obsolete aLIGO files), not a result to agree with.

One line per file (with both programs' wall times), then a Markdown table of the
counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

RTOL = 1e-9
F2_TIMEOUT = 120  # seconds; a file Finesse 2 takes longer on is left out, as refused
OURS_TIMEOUT = 600  # seconds; katparallel's kat taking longer is counted "too slow"
APART = ("finesse2 refuses", "finesse2 gives up a lock")  # not counted as runs
LOCK_GIVEN_UP = "Stopped lock iteration"  # Finesse 2's warning when a lock fails
_AXIS = re.compile(r"^\s*(xaxis|noxaxis|x2axis)\b", re.M)
_AXES = re.compile(r"^\s*(xaxis|x2axis|x3axis)\*?\s", re.M)  # one output column each
_DETECTOR = re.compile(r"^\s*(pd\d*|ad|bp|beam|qnoised[SN]?|qshot[SN]?|q?hd[SN]?|xd|gouy)\s", re.M)
_NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)(?=\s|$)"
_LENGTH = re.compile(r"(?mi)^(\s*(?:s|const)\s+\S+\s+|\s*attr\s+\S+\s+ro?c[xy]?\s+)" + _NUMBER)
_SPACE = re.compile(r"^\s*s\s+\S+\s+.*?(\S+)\s+(\S+)\s*(#.*)?$", re.M)


def probed(text: str) -> str:
    """``text`` with an axis and detectors added where it has none (see above)."""
    if not _DETECTOR.search(text):
        nodes = dict.fromkeys(n for m in _SPACE.finditer(text) for n in m.group(1, 2))
        text += "\n" + "".join(f"pd probe{i} {n}\npd probe{i}s {n}*\n"
                               for i, n in enumerate(list(nodes)[:40]))
    if not _AXIS.search(text):
        text += "\nnoxaxis\n"
    return text


def read_out(path: Path) -> np.ndarray:
    """Return the numbers of a Finesse 2 style ``.out`` file, one row per point."""
    rows = [line.split() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("%")]
    return np.array([[float(v) for v in row] for row in rows], dtype=float)


def complex_columns(text: str) -> int | None:
    """The first output column of a kat file whose outputs are written ``re:im`` (each
    output a real and an imaginary column after the axis columns), else None."""
    yaxis = [line.split() for line in text.splitlines()
             if line.split()[:1] == ["yaxis"] and len(line.split()) > 1]
    if not yaxis or "re:im" not in yaxis[-1][-1]:
        return None
    return max(1, len(_AXES.findall(text)))


def differences(ref: np.ndarray, got: np.ndarray,
                complex_from: int | None = None) -> np.ndarray:
    """Each number's difference relative to the larger of the two values plus its
    column's largest (the table's largest in a column Finesse 2 writes as exact zeros),
    phases modulo 360; ``inf`` and ``nan`` match only themselves. ``ref`` and ``got``
    have the same shape. From column ``complex_from`` on (see :func:`complex_columns`)
    each pair of columns is one complex number, compared by its modulus: a real or an
    imaginary part that is rounding of a number along the other axis is not a
    number of its own."""
    ref, got = _as_moduli(ref, complex_from), _as_moduli(got, complex_from)
    scale = np.maximum(np.abs(ref), np.abs(got))
    column = np.max(np.abs(ref), axis=0, initial=0.0)
    floor = np.where(column > 0, column, np.max(column, initial=0.0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # Whole turns taken out exactly: (d + 180) % 360 - 180 rounds a difference
        # below 180 ulp of 180 (3e-14) to 0, which hid every difference of numbers
        # that small (a 4e-8 relative difference of 3e-11 W).
        difference = ref - got
        wrapped = np.abs(difference - 360.0 * np.round(difference / 360.0))
        if np.iscomplexobj(difference):
            wrapped = np.abs(difference)
        rel = np.minimum(np.abs(difference), wrapped) / (scale + floor)
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))  # inf and nan only as themselves
    rel = np.where(same, 0.0, np.where(np.isfinite(rel), rel, np.inf))
    if ref.shape[1:] != got.shape[1:] or not np.iscomplexobj(ref):
        return rel
    return np.concatenate([rel[:, :complex_from].real,
                           np.repeat(rel[:, complex_from:].real, 2, axis=1)], axis=1)


def _as_moduli(table: np.ndarray, complex_from: int | None) -> np.ndarray:
    """``table`` with its ``re:im`` column pairs from ``complex_from`` on as complex
    numbers (the axis columns before them complex too); as it is without pairs."""
    if complex_from is None or (table.shape[1] - complex_from) % 2:
        return table
    pairs = table[:, complex_from:]
    return np.concatenate([table[:, :complex_from] + 0j,
                           pairs[:, 0::2] + 1j * pairs[:, 1::2]], axis=1)


def agree(ref: np.ndarray, got: np.ndarray, rtol: float = RTOL,
          complex_from: int | None = None) -> str | None:
    """Return None if ``got`` matches ``ref``, else what differs (see
    :func:`differences` for ``complex_from``)."""
    if ref.shape != got.shape:
        return f"shape {got.shape} != Finesse 2's {ref.shape}"
    rel = differences(ref, got, complex_from)
    bad = rel > rtol
    if not bad.any():
        return None
    i, j = np.argwhere(bad)[0]
    return f"{bad.sum()} numbers differ by up to {rel.max():.1e}, first row {i} column {j}: " \
           f"{got[i, j]!r} vs Finesse 2's {ref[i, j]!r}"


def differing_columns(ref: np.ndarray, got: np.ndarray, ours: Path,
                      complex_from: int | None = None) -> str:
    """The names (from the header of our ``.out`` file) of the columns where ``got``
    differs from ``ref`` by more than ``RTOL``; ``ref`` and ``got`` have one shape."""
    header = next((line[1:] for line in ours.read_text().splitlines()
                   if line.startswith("%") and line[1:2] not in ("", " ")), "")
    names = header.split(",")
    bad = np.flatnonzero((differences(ref, got, complex_from) > RTOL).any(axis=0))
    return "; columns: " + ", ".join(names[j] if j < len(names) else str(j) for j in bad[:8]) \
        + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")


def one_ulp_longer(text: str) -> str:
    """``text`` with every length a space, a ``const`` or an ``attr … Rc`` gives as a
    plain non-integer number made one ulp larger (integers may be counts, so they stay)."""
    def longer(m: re.Match) -> str:
        value = float(m.group(2))
        if value == 0 or value.is_integer():
            return m.group(0)
        return m.group(1) + repr(float(np.nextafter(value, np.inf)))
    return _LENGTH.sub(longer, text)


def self_consistency(binary: Path, text: str, ref: np.ndarray, work: Path) -> str:
    """How far Finesse 2's own numbers move when every length (:func:`one_ulp_longer`)
    is one ulp longer: a difference of that size is rounding that the file magnifies."""
    other = work / "ulp"
    other.mkdir()
    (other / "input.kat").write_text(one_ulp_longer(text))
    out, outcome = run_finesse2(binary, other / "input.kat", other)
    moved = read_out(out) if out is not None else None
    if moved is None or moved.shape != ref.shape:
        return f"; Finesse 2 one ulp longer: {outcome}"
    moves = differences(ref, moved, complex_columns(text)).max()
    return (f"; Finesse 2 itself moves by up to {moves:.1e} "
            "when every length is one ulp longer")


def run_finesse2(binary: Path, katfile: Path, work: Path) -> tuple[Path | None, str]:
    """Run real Finesse 2; return its output file (None if it refused the file or took
    longer than ``F2_TIMEOUT``) and its outcome."""
    ini = (binary.parent / "kat.ini").read_text()
    (work / "kat.ini").write_text(re.sub(r"(?m)^lambda .*$", "lambda 1.064E-6", ini))
    f2kat = work / "f2.kat"  # without gnuplot, which Finesse 2 would call and fail
    f2kat.write_text(katfile.read_text() + "\ngnuterm no\n")
    log = work / "f2.log"  # its progress bar alone can run to hundreds of MB
    try:
        with log.open("wb") as fh:
            proc = subprocess.run([str(binary), "--noheader", f2kat.name, "f2.out"], cwd=work,
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=F2_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "finesse2 refuses"
    out = work / "f2.out"
    if proc.returncode != 0 or not out.exists():
        return None, "finesse2 refuses"
    if subprocess.run(["grep", "-q", LOCK_GIVEN_UP, str(log)]).returncode == 0:
        return None, "finesse2 gives up a lock"
    return out, "ran"


def run_ours(katfile: Path, work: Path) -> tuple[str, str]:
    """Run katparallel's kat in this process; return (outcome, detail)."""
    from katparallel.finesse2 import program

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = program.main([str(katfile), str(work / "ours.out")])
    except Exception:  # noqa: BLE001 -- counting tracebacks is the point
        return "traceback", traceback.format_exc().strip().splitlines()[-1]
    if status != 0:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        return "refuse", " | ".join(lines[1:3])
    return "ran", ""


def _child(katfile: Path, work: Path, conn) -> None:
    conn.send(run_ours(katfile, work))


def run_ours_bounded(katfile: Path, work: Path, timeout: float) -> tuple[str, str]:
    """:func:`run_ours` in a forked child (katparallel already imported by the parent),
    stopped after ``timeout`` seconds as ``too slow``."""
    import katparallel.finesse2.program  # noqa: F401 -- imported once, before forking

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(katfile, work, child))
    proc.start()
    child.close()
    try:
        if parent.poll(timeout):
            return parent.recv()
        return "too slow", f"stopped after {timeout:.0f} s"
    except EOFError:
        return "traceback", f"the child process died (exit code {proc.exitcode})"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


OUTCOMES = ("agree", "differ", "refuse", "traceback", "too slow", *APART)


def measure(binary: Path, corpus: Path, timeout: float) -> dict[str, dict[str, int]]:
    """Run every kat file of ``corpus`` both ways, print one line per file and return
    the counts of each outcome per top-level folder (``.`` for files at the top)."""
    counts: dict[str, dict[str, int]] = {}
    for katfile in sorted(corpus.rglob("*.kat")):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            text = probed(katfile.read_text(errors="replace"))
            local = work / "input.kat"
            local.write_text(text)
            start = time.perf_counter()
            ref, outcome = run_finesse2(binary, local, work)
            f2_time, our_time = time.perf_counter() - start, float("nan")
            detail = ""
            if ref is not None:
                start = time.perf_counter()
                outcome, detail = run_ours_bounded(local, work, timeout)
                our_time = time.perf_counter() - start
                if outcome == "ran":
                    pairs = complex_columns(text)
                    problem = agree(read_out(ref), read_out(work / "ours.out"),
                                    complex_from=pairs)
                    outcome, detail = ("agree", "") if problem is None else ("differ", problem)
                if outcome == "differ":
                    if "shape" not in detail:
                        detail += differing_columns(read_out(ref), read_out(work / "ours.out"),
                                                    work / "ours.out", pairs)
                    detail += self_consistency(binary, text, read_out(ref), work)
        parts = katfile.relative_to(corpus).parts
        folder = counts.setdefault(parts[0] if len(parts) > 1 else ".",
                                   dict.fromkeys(OUTCOMES, 0))
        folder[outcome] += 1
        print(f"{outcome:24s} {katfile.relative_to(corpus)}  [F2 {f2_time:.1f} s, ours "
              f"{our_time:.1f} s]  {detail}", flush=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", type=Path, help="real Finesse 2 kat binary")
    parser.add_argument("corpus", type=Path, help="folder of kat files")
    parser.add_argument("--timeout", type=float, default=OURS_TIMEOUT,
                        help="seconds katparallel's kat may take on one file")
    args = parser.parse_args()
    shutil.which(str(args.binary)) or sys.exit(f"{args.binary} is not executable")
    counts = measure(args.binary.resolve(), args.corpus, args.timeout)
    counts["all"] = {key: sum(c[key] for c in counts.values()) for key in OUTCOMES}
    print("\n| folder | files Finesse 2 runs | " + " | ".join(OUTCOMES) + " |")
    print("|---" * (len(OUTCOMES) + 2) + "|")
    for folder, folder_counts in counts.items():
        runs = sum(v for k, v in folder_counts.items() if k not in APART)
        print(f"| {folder} | {runs} | " + " | ".join(str(folder_counts[key]) for key in OUTCOMES)
              + " |")
    total = counts["all"]
    runs = sum(v for k, v in total.items() if k not in APART)
    print(f"\n{total['agree']} of {runs} files Finesse 2 runs agree "
          f"({100 * total['agree'] / max(runs, 1):.0f}%); counting the files whose lock "
          f"Finesse 2 gives up as failures: {total['agree']} of "
          f"{runs + total['finesse2 gives up a lock']}")


if __name__ == "__main__":
    main()
