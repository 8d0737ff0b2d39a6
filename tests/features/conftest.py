"""Fixtures of the feature-extraction tests (they run the bundled models)."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(request):
    """One torch thread for the tests that run a model.

    Small forward passes on an oversubscribed machine are several times slower with
    more threads than free cores (threads wait for each other at every operation).
    """
    if "torch" not in request.module.__dict__:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
