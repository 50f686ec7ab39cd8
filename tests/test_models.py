"""katparallel.models: the reference models, fetched once into a cache and checked.

The first test downloads the finesse-ligo wheel (pip's own cache makes it
cheap); a failed download fails it, as it fails the real-model tests.
"""

import shutil

import pytest

from katparallel import Ensemble
from katparallel.models import aligo, data_folder


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """A cache folder that aligo() filled itself, starting empty."""
    folder = tmp_path_factory.mktemp("fresh") / "data"
    text = aligo(folder)
    return folder, text


def test_aligo_downloads_the_wheel_whole_into_an_empty_cache(fetched):
    folder, _ = fetched
    assert [p.name for p in folder.iterdir()] == ["finesse_ligo-1.0.15-py3-none-any.whl"]


def test_aligo_is_the_design_model_finesse_reads(fetched):
    import finesse

    _, text = fetched
    model = finesse.Model()
    model.parse(text + "modes(maxtem=1)")
    assert len(model.elements) == 213
    assert {"PRG", "AGX", "AGY"} <= {d.name for d in model.detectors}
    for variable in ("Xloss", "Yloss", "Larm", "lschnupp"):
        assert type(model.get(variable)).__name__ == "Parameter", variable


def test_aligo_runs_as_an_ensemble(fetched):
    _, text = fetched
    res = Ensemble(text).vary("PRM.T", [0.03, 0.02]).run(backend="serial", progress=False)
    assert not res.failures
    low_t, = res["PRG"].sel({"PRM.T": 0.02}).values.ravel()
    high_t, = res["PRG"].sel({"PRM.T": 0.03}).values.ravel()
    assert high_t > 1 and low_t != high_t  # a recycling cavity whose gain PRM.T sets


def test_a_cached_wheel_that_is_not_the_published_one_is_refused(fetched, tmp_path):
    folder, _ = fetched
    wheel = next(folder.iterdir())
    forged = tmp_path / wheel.name
    shutil.copy(wheel, forged)
    with forged.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="is not the finesse-ligo==1.0.15 wheel.*delete it"):
        aligo(tmp_path)


def test_the_cache_folder_is_katparallel_data_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("KATPARALLEL_DATA", str(tmp_path))
    assert data_folder() == tmp_path
    assert data_folder(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("KATPARALLEL_DATA")
    assert data_folder().parts[-2:] == (".cache", "katparallel-data")
