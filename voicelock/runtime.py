"""CPU thread limits for serving: torch (and so ONNX Runtime, which follows it) *and* the BLAS library under numpy.

Why both: a service worker sets torch to one thread so that workers do not fight for cores, but
numpy's OpenBLAS still starts one spinning thread per core. Measured on 2 cores with the other core
busy: the AS-norm speaker score (two small matrix products) took 16 ms with OpenBLAS's default
threads and 0.10 ms on one; a whole unlock went from 24 ms to 4.5 ms.
"""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits


def limit_threads(n: int) -> None:
    """Run torch's intra-op pool and every BLAS/OpenMP pool numpy uses on `n` threads, process-wide."""
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
