"""Arguments that hand katparallel a cluster object are checked before anything starts."""

import pytest

ipyparallel = pytest.importorskip("ipyparallel")


def test_ipyparallel_cluster_and_a_connection_are_refused_together():
    from katparallel.backends.ipyparallel import IPyParallelBackend

    cluster = ipyparallel.Cluster(engines="slurm", n=2)
    with pytest.raises(ValueError, match=r"either cluster= or profile=, not both"):
        IPyParallelBackend(cluster=cluster, profile="default")
    assert cluster.controller is None and not cluster.engines  # nothing was started


def test_ipyparallel_cluster_must_be_a_cluster_not_a_client():
    from katparallel.backends.ipyparallel import IPyParallelBackend

    with pytest.raises(TypeError, match=r"cluster= takes an ipyparallel.Cluster, got str; "
                                        r"give a connected ipyparallel.Client as client="):
        IPyParallelBackend(cluster="slurm")
