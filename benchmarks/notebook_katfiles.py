"""Extract the Finesse 2 kat files of Jupyter notebooks, by a rule fixed in advance.

Usage::

    python benchmarks/notebook_katfiles.py NOTEBOOK_DIR OUT_DIR

The rule (fixed before any file was run): for every ``*.ipynb`` under NOTEBOOK_DIR,
except ``.ipynb_checkpoints`` and ``tmp`` folders, every code cell whose triple-quoted
strings, joined in order, contain a laser line (``l``, ``laser`` or ``light``) gives
one kat file, ``NOTEBOOK__cellNN.kat``, written to OUT_DIR (outside the repository).
Kat text built in other cells or by Python code is not followed. Measure the result
with ``benchmarks/finesse2_corpus.py``, which adds detectors and ``noxaxis`` where a
file has none.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_STRINGS = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.S)
_LASER = re.compile(r"(?m)^\s*(l|laser|light)\s+\S+")


def extract(notebooks: Path, out: Path) -> int:
    """Write the kat files of the notebooks under ``notebooks``; return how many."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(notebooks.rglob("*.ipynb")):
        parts = path.relative_to(notebooks).parts
        if ".ipynb_checkpoints" in parts or "tmp" in parts:
            continue
        cells = json.loads(path.read_text()).get("cells", [])
        stem = "__".join(path.relative_to(notebooks).with_suffix("").parts)
        for index, cell in enumerate(cells):
            if cell.get("cell_type") != "code":
                continue
            source = "".join(cell.get("source", []))
            text = "\n".join(a or b for a, b in _STRINGS.findall(source))
            if _LASER.search(text):
                (out / f"{stem}__cell{index:02d}.kat").write_text(text + "\n")
                written += 1
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: notebook_katfiles.py NOTEBOOK_DIR OUT_DIR")
    print(extract(Path(sys.argv[1]), Path(sys.argv[2])), "kat files")
