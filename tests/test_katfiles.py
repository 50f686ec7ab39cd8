"""The corpus extraction rule of ``benchmarks/katfiles.py``, on a small source tree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from katfiles import extract  # noqa: E402

CAVITY = "l L0 1 0 n0\ns s0 1 n0 n1\nm m1 0.9 0.1 0 n1 n2\npd P n2\n"
SCRIPT = f'''
import pykat
kat.parse("""
{CAVITY}xaxis m1 phi lin 0 180 10
""")
fragment = """
{CAVITY}"""
template = """
l L0 {{}} 0 n0
xaxis L0 P lin 1 2 3
""".format(2)
old_style = """
l L0 %s 0 n0
xaxis L0 P lin 1 2 3
""" % 2
fstring = f"""
l L0 {{power}} 0 n0
noxaxis
"""
'''


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "examples").mkdir(parents=True)
    (src / "examples" / "cavity.kat").write_text(CAVITY)  # a .kat file, kept whole
    (src / "examples" / "copy.kat").write_text(CAVITY + "\n")  # the same text again
    (src / "run.py").write_text(SCRIPT)
    cells = [{"cell_type": "markdown", "source": ['"""l L0 1 0 n0\nnoxaxis"""']},
             {"cell_type": "code", "source": ['a = """l L0 1 0 n0\n', 's s0 1 n0 n1"""\n',
                                              'b = """pd P n1\nnoxaxis"""']}]
    (src / "notes.ipynb").write_text(json.dumps({"cells": cells}))
    return src


def test_the_rule_keeps_complete_kat_text_and_skips_the_rest(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    out = tmp_path / "corpus" / "new"
    counts = extract(src, out, need_axis=True, suffixes=(".kat", ".py", ".ipynb"))
    written = sorted(p.name for p in out.glob("*.kat"))
    assert written == ["examples__cavity.kat", "notes__cell01.kat", "run__str00.kat"]
    assert counts == {"written": 3, "duplicate": 1, "template": 3}
    assert (out / "notes__cell01.kat").read_text() == (
        "l L0 1 0 n0\ns s0 1 n0 n1\npd P n1\nnoxaxis\n")  # a cell's strings, joined
    assert "xaxis m1 phi" in (out / "run__str00.kat").read_text()


def test_without_need_axis_a_fragment_is_kept_and_the_corpus_tree_dedupes(
        tmp_path: Path) -> None:
    src = _tree(tmp_path)
    corpus = tmp_path / "corpus"
    (corpus / "old").mkdir(parents=True)
    (corpus / "old" / "earlier.kat").write_text("\n" + CAVITY)  # already in the tree
    counts = extract(src, corpus / "new", need_axis=False, suffixes=(".py",))
    assert sorted(p.name for p in (corpus / "new").glob("*.kat")) == ["run__str00.kat"]
    assert counts == {"written": 1, "duplicate": 1, "template": 3}  # the fragment
