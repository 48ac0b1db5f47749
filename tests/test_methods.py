"""The method registry: one module per method, and everything that lists methods reads it."""

from __future__ import annotations

from sweeper import methods
from sweeper.spec import Methods, MethodSpec
from sweeper.tasks import TASKS


def test_the_registry_holds_each_method_once_in_search_order():
    assert list(methods.METHODS) == ["full", "did", "said", "lora", "resampled"]
    assert methods.searched() == ("did", "said", "lora", "resampled")
    assert all(methods.get(name).name == name for name in methods.METHODS)


def test_the_dimension_is_named_d_except_for_lora_rank():
    assert [methods.dim_name(name) for name in methods.METHODS] == ["d", "d", "d", "r", "d"]
    assert methods.dim_name(None) == "d"  # a stored run without a method, as MLflow reads it
    assert methods.get("full").dim_name is None  # the baseline has no dimension


def test_the_job_spec_lists_the_registered_methods_and_their_fields():
    assert list(Methods.model_fields) == list(methods.METHODS)
    fields = {name for m in methods.METHODS.values() for name in m.fields.model_fields}
    assert set(MethodSpec.model_fields) == fields | {"search", "train"}


def test_every_task_runs_only_registered_methods_and_always_the_baseline():
    for task in TASKS.values():
        assert set(task.unsupported) <= set(methods.METHODS)
        assert "full" in methods.supported(task.unsupported)


def test_only_subspace_methods_save_compressed_models():
    saving = [name for name, m in methods.METHODS.items() if m.saves_compressed]
    assert saving == ["did", "said"]
