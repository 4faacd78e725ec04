import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from voicelock.runtime import limit_threads


def test_limit_threads_covers_torch_and_numpy_blas():
    np.ones((4, 4)) @ np.ones((4, 4))  # make sure numpy's BLAS is loaded
    before_torch = torch.get_num_threads()
    with threadpool_limits():  # restores the BLAS pools afterwards
        try:
            limit_threads(1)
            assert torch.get_num_threads() == 1
            pools = threadpool_info()
            assert any(p["user_api"] == "blas" for p in pools), pools
            assert all(p["num_threads"] == 1 for p in pools), pools
        finally:
            torch.set_num_threads(before_torch)
