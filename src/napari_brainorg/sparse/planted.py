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


def write_planted_ans(path, n_volumes: int = 300, n_ans: int = 100_000, k: int = 64, *,
                      noise: float = 0.5, density: float = 3.0, random_state=None,
                      block: int = 65_536) -> np.ndarray:
    """Write SIMULATED ANs with planted atoms to a ``.npy`` file, block by block.

    Same model as :func:`planted_ans` (smooth atoms, about ``density`` atoms per AN,
    white noise, z-scored float32 columns), for sizes that do not fit in memory
    twice: at most ``block`` columns are generated at a time. The noise scale uses
    the signal's expected standard deviation, ``sqrt(density / n_volumes)``, instead
    of the sample's, so the draws differ from :func:`planted_ans` for the same seed.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file to write (float32, shape (n_volumes, n_ans), C order);
        an existing file is refused.
    block : int
        Columns generated at a time (memory about ``5 * 8 * n_volumes * block`` bytes).

    Returns
    -------
    atoms : ndarray of shape (n_volumes, k), the planted atoms
    """
    from pathlib import Path

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"'path' {str(path)!r} exists; write_planted_ans does not overwrite files.")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    atoms = smooth_atoms(rng, n_volumes, k, width=2.0)
    scale = noise * np.sqrt(density / n_volumes)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_volumes, n_ans))
    try:
        for start in range(0, n_ans, block):
            n = min(block, n_ans - start)
            codes = rng.standard_normal((k, n)) * (rng.random((k, n)) < density / k)
            X = atoms @ codes
            X += scale * rng.standard_normal(X.shape)
            X -= X.mean(0)
            X /= X.std(0)
            out[:, start:start + n] = X
        out.flush()
    finally:
        del out
    return atoms
