"""Shared test set-up: small models run fastest on one thread, and CI has two cores."""

import os

import pytest
import torch

from sweeper.engine.driver import driver_environment

torch.set_num_threads(1)
# Tests call `run_job` in-process: give them the environment `sweeper run` gives its driver
# (loopback-only Ray, no Tune file loggers) before anything imports ray.
os.environ.update(driver_environment(os.environ))


@pytest.fixture(autouse=True, scope="module")
def _environment_per_module():
    """Give every module the environment it started with. `ray.init` in a test process sets
    variables and leaves them (RAY_AUTH_MODE=token among them): a Ray cluster a later module
    starts would inherit token authentication and lock its own client out."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
