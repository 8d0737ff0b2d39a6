"""SIMULATED artificial-neuron responses with planted atoms, for checking recovery.

Used by the tests and benchmarks of the dictionary learner and of the (k, lambda)
sweep; a user can run the same check before trusting a setting on real ANs.
"""

from __future__ import annotations

import numpy as np


def smooth_atoms(rng: np.random.Generator, n_volumes: int, k: int, width: float = 4.0) -> np.ndarray:
    """Unit-norm, zero-mean random time courses smoothed like slow BOLD-like signals.

    Returns
    -------
    atoms : ndarray of shape (n_volumes, k)
    """
    t = np.arange(-3 * int(width), 3 * int(width) + 1)
    kernel = np.exp(-0.5 * (t / width) ** 2)
    white = rng.standard_normal((n_volumes + len(t) - 1, k))
    atoms = np.stack([np.convolve(white[:, j], kernel, mode="valid") for j in range(k)], 1)
    atoms -= atoms.mean(0)
    return atoms / np.linalg.norm(atoms, axis=0)


def planted_ans(n_volumes: int = 120, n_ans: int = 2000, k: int = 16, *, noise: float = 0.5,
                density: float = 3.0, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Simulated ANs: planted smooth atoms, sparse codes, white noise.

    Parameters
    ----------
    n_volumes, n_ans, k : int
    noise : float
        Noise standard deviation relative to the signal's: the signal-to-noise ratio in
        variance is ``1 / noise**2`` (4 by default).
    density : float
        Expected number of atoms per AN.
    random_state : int or numpy Generator, optional

    Returns
    -------
    X : ndarray of shape (n_volumes, n_ans), float32, z-scored columns
    atoms : ndarray of shape (n_volumes, k), the planted atoms
    """
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    atoms = smooth_atoms(rng, n_volumes, k, width=2.0)
    codes = rng.standard_normal((k, n_ans)) * (rng.random((k, n_ans)) < density / k)
    signal = atoms @ codes
    X = signal + noise * signal.std() * rng.standard_normal(signal.shape)
    X = (X - X.mean(0)) / X.std(0)
    return X.astype(np.float32), atoms
