"""Regenerate the Finesse 2 reference outputs (``*.out``) of the kat files here.

Usage::

    python tests/data/finesse2/regenerate.py /path/to/finesse2/kat [name.kat ...]

A ``name.extra`` file is appended to PyKat's own aLIGO design file (found in the
installed pykat, never copied here) to make the input of ``name.out``.

or with ``FINESSE2_KAT=/path/to/finesse2/kat``. The binary is a real Finesse 2.3.1
(e.g. ``pykat-finesse/finesse_linux/kat`` of github.com/bmedicke/optical-cavity); it is
never committed. Each kat file runs in a scratch directory holding a ``kat.ini`` made
from the one next to the binary with ``lambda 1.064E-6`` (Finesse 2's standard; that
repository's ``kat.ini`` says 633 nm), with ``gnuterm no`` appended so that Finesse 2
does not call gnuplot. The ``.out`` file is written with ``--noheader`` beside the kat
file; a kat file Finesse 2 refuses is reported and gets no ``.out``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Found without importing pykat, which looks for a kat program when imported.
ALIGO_DESIGN = (Path(importlib.util.find_spec("pykat").origin).parent
                / "ifo" / "aligo" / "files" / "design.kat")


def kat_text(path: Path) -> str:
    """The kat text ``path`` stands for: a kat file, or PyKat's aLIGO design + extra."""
    if path.suffix == ".extra":
        return ALIGO_DESIGN.read_text() + "\n" + path.read_text()
    return path.read_text()


def run_finesse2(binary: Path, katfile: Path, outfile: Path) -> str | None:
    """Run real Finesse 2 on ``katfile``; return its error text, or None on success."""
    ini = binary.parent / "kat.ini"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if ini.exists():
            text = re.sub(r"(?m)^lambda .*$", "lambda 1.064E-6", ini.read_text())
            (work / "kat.ini").write_text(text)
        (work / "in.kat").write_text(kat_text(katfile) + "\ngnuterm no\n")
        proc = subprocess.run([str(binary), "--noheader", "--quiet", "in.kat", "in.out"],
                              cwd=work, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not (work / "in.out").exists():
            return (proc.stdout + proc.stderr).strip()[-500:]
        shutil.copy(work / "in.out", outfile)
    return None


def main(argv: list[str]) -> int:
    """Regenerate the references named in ``argv`` (all kat files here by default)."""
    binary = Path(argv[0]) if argv else Path(os.environ.get("FINESSE2_KAT", ""))
    if not binary.is_file():
        sys.stderr.write("usage: regenerate.py FINESSE2_KAT [name.kat ...] "
                         "(or set FINESSE2_KAT)\n")
        return 2
    names = argv[1:] or sorted(p.name for p in [*HERE.glob("*.kat"), *HERE.glob("*.extra")])
    failed = 0
    for name in names:
        katfile = HERE / name
        error = run_finesse2(binary.resolve(), katfile, katfile.with_suffix(".out"))
        print(f"{'ok' if error is None else 'REFUSED':8s} {name}")
        if error is not None:
            failed += 1
            print("   ", error.replace("\n", "\n    "))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
