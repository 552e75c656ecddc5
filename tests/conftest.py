"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tests run tiny shapes, which are fastest on one thread (two threads spin-wait on each other,
    badly so on a busy machine). Subprocess tests set their own threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
