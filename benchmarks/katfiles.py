"""Extract the Finesse 2 kat files of a source tree, by a rule fixed in advance.

Usage::

    python benchmarks/katfiles.py SOURCE_DIR OUT_DIR [--need-axis] \
        [--suffixes .kat,.py,.ipynb]

The rule (fixed before any file was run), for every file under SOURCE_DIR except in
``.ipynb_checkpoints`` and ``tmp`` folders:

* a ``.kat`` file is taken whole;
* a ``.py`` file gives one candidate per triple-quoted string;
* a ``.ipynb`` notebook gives one candidate per code cell: its triple-quoted strings
  joined in order.

A candidate is kept if it has a laser line (``l``, ``laser`` or ``light``) and, with
``--need-axis``, an axis line (``xaxis``, ``xaxis*`` or ``noxaxis``): text without them
is a fragment that Python completes. Of those, a template is skipped: a string with an
``f`` prefix, followed by ``.format(`` or by the ``%`` operator, or holding a ``{...}``
placeholder (Finesse 2 itself never uses braces), and a cell with such a string. A
``.kat`` file is kept whatever it holds. Text equal, up to surrounding whitespace, to
a ``.kat`` file already anywhere under OUT_DIR's parent (the corpus tree) or written
earlier in the run is skipped as a duplicate. Each kept text is written to OUT_DIR (outside the repository) as
``PATH__PARTS.kat``, ``PATH__PARTS__strNN.kat`` (the string's index in the file) or
``PATH__PARTS__cellNN.kat``. Kat text built in other cells or by Python code is not
followed. Measure the result with ``benchmarks/finesse2_corpus.py``, which adds
detectors and ``noxaxis`` where a file has none.

The ``learn_laser_interferometry`` notebooks were extracted with
``--suffixes .ipynb`` and no ``--need-axis``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

_STRINGS = re.compile(r'(?<![\w"\'])([rRbBuUfF]{0,2})("""(.*?)"""|\'\'\'(.*?)\'\'\')'
                      r'(\s*(?:\.format\(|%))?', re.S)
_LASER = re.compile(r"(?m)^\s*(l|laser|light)\s+\S+")
_AXIS = re.compile(r"(?m)^\s*(xaxis\*?|noxaxis)(?=\s|$)")
_BRACES = re.compile(r"\{[^{}\n]*\}")
_SKIP_DIRS = {".ipynb_checkpoints", "tmp"}


def strings(source: str) -> Iterator[tuple[str, bool]]:
    """(text, is a template) of each triple-quoted string of Python ``source``."""
    for m in _STRINGS.finditer(source):
        text = m.group(3) if m.group(3) is not None else m.group(4)
        template = "f" in m.group(1).lower() or m.group(5) or _BRACES.search(text)
        yield text, bool(template)


def candidates(path: Path) -> Iterator[tuple[str, str, bool]]:
    """(name suffix, text, is a template) of every candidate of one file."""
    if path.suffix == ".kat":
        yield "", path.read_text(errors="replace"), False
    elif path.suffix == ".py":
        for index, (text, template) in enumerate(strings(path.read_text(errors="replace"))):
            yield f"__str{index:02d}", text + "\n", template
    elif path.suffix == ".ipynb":
        cells = json.loads(path.read_text(errors="replace")).get("cells", [])
        for index, cell in enumerate(cells):
            if cell.get("cell_type") == "code":
                source = cell.get("source", [])
                found = list(strings(source if isinstance(source, str) else "".join(source)))
                text = "\n".join(t for t, _ in found) + "\n"
                yield f"__cell{index:02d}", text, any(t for _, t in found)


def extract(source: Path, out: Path, need_axis: bool, suffixes: tuple[str, ...]) -> dict:
    """Write the kat files of ``source`` to ``out``; return counts of kept and skipped."""
    out.mkdir(parents=True, exist_ok=True)
    seen = {p.read_text(errors="replace").strip() for p in out.parent.rglob("*.kat")}
    counts = {"written": 0, "duplicate": 0, "template": 0}
    for path in sorted(p for p in source.rglob("*") if p.suffix in suffixes and p.is_file()):
        parts = path.relative_to(source).with_suffix("").parts
        if _SKIP_DIRS.intersection(parts):
            continue
        for suffix, text, template in candidates(path):
            if path.suffix != ".kat" and not (
                    _LASER.search(text) and (_AXIS.search(text) or not need_axis)):
                continue
            if template:
                counts["template"] += 1
                continue
            if text.strip() in seen:
                counts["duplicate"] += 1
                continue
            seen.add(text.strip())
            (out / f"{'__'.join(parts)}{suffix}.kat").write_text(text)
            counts["written"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a repository's files (outside this one)")
    parser.add_argument("out", type=Path, help="a folder of the corpus tree")
    parser.add_argument("--need-axis", action="store_true",
                        help="keep only strings and cells with an xaxis or noxaxis line")
    parser.add_argument("--suffixes", default=".kat,.py,.ipynb",
                        help="comma-separated file suffixes to read")
    args = parser.parse_args()
    counts = extract(args.source, args.out, args.need_axis, tuple(args.suffixes.split(",")))
    print(", ".join(f"{value} {key}" for key, value in counts.items()))


if __name__ == "__main__":
    main()
