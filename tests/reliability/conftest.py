"""Shared by the reliability families."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """These tensors are tiny: on a busy machine intra-op threads only contend (steps measured
    10x slower with 2 threads than with 1 on the 2-core CI box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
