"""One switch between numpy and torch (CPU or CUDA) for the solvers.

Solvers written against :class:`Backend` run unchanged on numpy arrays or torch
tensors. torch is imported only when a torch backend is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import check_choice

BACKENDS = ("numpy", "torch", "auto")


@dataclass(frozen=True)
class Backend:
    """Array operations for one library and device.

    Parameters
    ----------
    name : {"numpy", "torch"}
    device : str
        ``"cpu"`` or a torch device such as ``"cuda"`` / ``"cuda:0"``.
    dtype : str
        ``"float32"`` or ``"float64"``.
    """

    name: str = "numpy"
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def xp(self) -> Any:
        """The array module: ``numpy`` or ``torch``."""
        if self.name == "numpy":
            return np
        import torch

        return torch

    def asarray(self, a):
        """Convert ``a`` to this backend's array type, device and dtype."""
        if self.name == "numpy":
            if not isinstance(a, np.ndarray):
                try:
                    a = a.detach().cpu().numpy()
                except AttributeError:
                    a = np.asarray(a)
            return np.ascontiguousarray(a, dtype=self.dtype)
        import torch

        dt = getattr(torch, self.dtype)
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=dt)
        return torch.as_tensor(np.asarray(a), dtype=dt, device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        """Return ``a`` as a numpy array on the CPU."""
        if isinstance(a, np.ndarray):
            return a
        try:
            return a.detach().cpu().numpy()
        except AttributeError:
            return np.asarray(a)


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def get_backend(name: str = "numpy", device: str | None = None, dtype: str = "float32") -> Backend:
    """Return a :class:`Backend`.

    Parameters
    ----------
    name : {"numpy", "torch", "auto"}
        ``"auto"`` picks torch on CUDA when a GPU is present, numpy otherwise.
    device : str or None
        torch device; default ``"cuda"`` when available, else ``"cpu"``.
    dtype : {"float32", "float64"}
    """
    check_choice("backend", name, BACKENDS)
    check_choice("dtype", dtype, ("float32", "float64"))
    if name == "auto":
        name = "torch" if cuda_available() else "numpy"
    if name == "numpy":
        return Backend("numpy", "cpu", dtype)
    if device is None:
        device = "cuda" if cuda_available() else "cpu"
    return Backend("torch", device, dtype)


_BLAS_CONTROLLER = None


def blas_controller():
    """The process's ``threadpoolctl.ThreadpoolController``, made once.

    Making one inspects every loaded shared library (about 5 ms with torch loaded);
    ``threadpool_limits(1)`` made one per call, and the GLS maps call it once per AR
    bin (a thousand times a run). The BLAS that numpy uses is loaded with numpy, before
    the first call, so the cached controller sees it.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER


def blas_limit(n: int = 1):
    """Context manager: at most ``n`` BLAS threads inside (small products, or threads of our own)."""
    return blas_controller().limit(limits=int(n), user_api="blas")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
