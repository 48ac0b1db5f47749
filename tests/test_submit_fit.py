"""`sweeper submit` refuses a trial that no alive node of the cluster can hold (Tune would keep
it pending forever); what a node offers is read from `ray.nodes()` rows like these."""

from __future__ import annotations

from sweeper.cluster.checks import trial_misfit
from sweeper.spec import Resources


def node(cpus: float, gpus: float = 0) -> dict:
    resources = {"CPU": cpus, "memory": 1e9, **({"GPU": gpus} if gpus else {})}
    return {"Alive": True, "Resources": resources}


def test_a_trial_that_one_node_holds_fits():
    assert trial_misfit(Resources(cpus_per_trial=4), [node(0), node(2), node(4)]) is None
    assert trial_misfit(Resources(cpus_per_trial=1, gpus_per_trial=1), [node(8, 1)]) is None


def test_too_many_cpus_names_cpus_per_trial():
    field, message = trial_misfit(Resources(cpus_per_trial=8), [node(0), node(4), node(4)])
    assert field == "resources.cpus_per_trial"
    assert "at most 4 CPUs and 0 GPUs" in message and "--autoscaling" in message


def test_a_gpu_trial_on_a_cpu_cluster_names_gpus_per_trial():
    field, _ = trial_misfit(Resources(cpus_per_trial=1, gpus_per_trial=1), [node(16)])
    assert field == "resources.gpus_per_trial"


def test_cpus_and_gpus_must_be_on_one_node():
    """8 CPUs on one node and a GPU on another do not make one 8-CPU GPU trial."""
    misfit = trial_misfit(Resources(cpus_per_trial=8, gpus_per_trial=1), [node(8), node(2, 1)])
    assert misfit is not None and misfit[0] == "resources.gpus_per_trial"


def test_no_node_at_all_is_a_misfit():
    assert trial_misfit(Resources(), []) is not None
