"""What the design could find: the smallest network driver the association test detects.

A null result of :func:`~napari_brainorg.networks.association.stimulus_association`
("no link declared") says only that this design did not detect one. This module says how
large a driver it would have detected: for every atom × network, the smallest **R² of a
network driver** (the share of each network voxel's variance explained by the atom's time
course) that the test declares with 80 % power, from the run's own subjects, volumes,
atoms and noise. No simulation is run; the calculation is semi-analytic.

The model of a driver
    Atom ``j`` (its unit-SD time course ``x_j``, drifts and confounds removed) drives every
    voxel of network ``n`` with R² ``rho``: a standardised voxel is
    ``sqrt(rho) x_j + sqrt(1 - rho) eps_v``, so the subjects' mean network series (what the
    test reads) is ``ybar = sqrt(rho) x_j + sqrt(1 - rho) ybar_0``, with ``ybar_0`` the
    run's own mean network series (the noise, fluctuations and shared signal of this run:
    its spectrum is the test's null spread).

The test's statistic and its null
    With random effects the test moves atom ``j``'s unique part ``r_j`` (moved
    ``"conditional"``): the statistic ranks ``T = r_j' e_j`` (``e_j``: the mean series less
    the other atoms' fit) among the draws ``(P_d r_j)' e_j``, whose mean and variance are
    exact sums over frequency bins (:func:`~napari_brainorg.encoding.calibration.phase_null_moments`).
    Under the driver ``T = sqrt(rho) ||r_j||^2 + sqrt(1 - rho) T_0`` (``T_0 ~ N(0, V_0)``,
    ``V_0`` the null variance from ``ybar_0``), and the draws spread with
    ``V_rho = rho c_j + (1 - rho) V_0`` (``c_j``: the variance of ``(P r_j)' r_j``; both in
    ``T``'s units, divided by the share of a draw's length the conditional test keeps,
    :func:`~napari_brainorg.encoding.calibration.moved_norm_share`). With
    fixed effects (moved ``"all"``) the same holds for the joint coefficient
    (``r_j`` -> ``X G^-1`` column, the driver's gain 1).

Declaring it
    One link among ``m`` tests of its FDR family (atoms × networks × both directions, per
    atlas and, across models, every model) is declared when its p is at most
    ``alpha / m`` (Benjamini–Hochberg with one true link, the hardest case) and at least
    the smallest p the draws can give, ``1 / (1 + n_draws)``; so the detection threshold
    is ``z_a = Phi^-1(1 - alpha / m)`` (the null spread taken as normal) and

        power(rho) = Phi((sqrt(rho) g_j - z_a sqrt(V_rho)) / sqrt((1 - rho) V_0))

    (``g_j = ||r_j||^2``). The detectable R² is the smallest ``rho`` with power 0.8, and at
    least ``min_effect**2`` (the test's effect-size rule: the mean coefficient of a driver
    is ``sqrt(rho)``). ``benchmarks/bench_sensitivity.py`` checks it on the simulator: the
    detection rate of a planted driver crosses 80 % near the predicted R².
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ..encoding.calibration import moved_norm_share, phase_null_moments
from ..errors import ConfigError
from .association import (_nuisance_basis, _residual_atoms, _subject_network_series, _unique_parts,
                          network_contrasts)

__all__ = ["POWER", "detectable_r2", "sensitivity_summary"]

#: the power at which the detectable effect is stated
POWER = 0.8
#: the R² grid the power is evaluated on (log-spaced; the answer is interpolated)
_GRID = np.geomspace(1e-4, 0.99, 400)


def _moments(X: np.ndarray, ybar: np.ndarray, Q: np.ndarray, moved: str, runs):
    """The gain of a driver, its own draw variance, and the null variance from the run's noise.

    The noise is the run's mean network series less the fit of every atom (what no atom
    explains), so that a driver already in the data does not count as noise twice.

    Returns ``gain`` (k,), ``c`` (k,), ``V0`` (k, n_networks).
    """
    Xr = _residual_atoms(X, Q)
    ybar = ybar - Q @ (Q.T @ ybar)
    Ginv = np.linalg.pinv(Xr.T @ Xr, hermitian=True)
    noise = ybar - Xr @ (Ginv @ (Xr.T @ ybar))
    if moved == "all":
        R = Xr @ Ginv  # a draw's joint coefficients are (P R)' ybar; the driver's gain R_j' x_j = 1
        return np.ones(X.shape[1]), np.diag(phase_null_moments(R, Xr, runs)[2]), phase_null_moments(R, noise, runs)[2]
    R, norm2 = _unique_parts(Xr, "unique")
    # the conditional draws are compared at the length they keep once the other atoms are
    # projected out again (the test's statistic divides by it): their spread in T's units
    # grows by 1 / that share
    share = moved_norm_share(R, np.linalg.qr(np.column_stack([Q, Xr]))[0], runs)[:, None]
    return norm2, np.diag(phase_null_moments(R, R, runs)[2]) / share[:, 0], phase_null_moments(R, noise, runs)[2] / share


def detectable_r2(atoms, fmri, networks, *, tr: float, confounds=None, highpass_cutoff: float | None = 128.0,
                  runs=None, network_score: str = "mean", moved: str = "conditional", n_tests: int,
                  alpha: float = 0.05, power: float = POWER, n_draws: int | None = None, min_effect: float = 0.0,
                  progress=None, cancel=None) -> np.ndarray:
    """The smallest driver R² the association test detects with ``power``, per atom × network.

    Parameters
    ----------
    atoms : array of shape (n_volumes, k)
    fmri : sequence of arrays of shape (n_volumes, n_voxels)
        The subjects' data the test read (voxels or regions).
    networks : array of shape (n_networks, n_voxels), bool
    tr, confounds, highpass_cutoff, runs, network_score
        As the test was run (:func:`~napari_brainorg.networks.association.stimulus_association`).
    moved : {"conditional", "unique", "all"}
        What the test's draws moved (``"unique"`` is read as ``"conditional"``).
    n_tests : int or array of shape (n_networks,)
        Tests in the link's FDR family (per network: each atlas is a family).
    alpha : float
        The FDR level.
    power : float
    n_draws : int, optional
        The most null draws a cell can get (first and further draws); the smallest p is
        ``1 / (1 + n_draws)``. None: not limiting.
    min_effect : float
        The test's effect-size rule (a declared link needs a mean coefficient at least this).

    Returns
    -------
    ndarray of shape (k, n_networks)
        R² in (0, 1); ``inf`` where no driver can be declared (the draws cannot give a
        p-value small enough, or the atom has no unique part to speak of).
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ConfigError(f"'alpha' and 'power' must lie in (0, 1); {alpha!r} and {power!r} were provided.")
    networks = np.asarray(networks, bool)
    n_tests = np.broadcast_to(np.asarray(n_tests, np.int64), (networks.shape[0],))
    if np.any(n_tests < 1):
        raise ConfigError(f"'n_tests' must be at least 1 for every network; {n_tests.tolist()!r} was provided.")
    X = np.asarray(atoms, np.float64)
    Q = _nuisance_basis(X.shape[0], tr, highpass_cutoff, confounds)
    ys = _subject_network_series(fmri, network_contrasts(networks, network_score), Q, progress, cancel)
    gain, c, V0 = _moments(X, ys.mean(0), Q, "all" if moved == "all" else "conditional", runs)
    return _solve(gain, c, V0, _threshold(alpha, n_tests, n_draws), power, min_effect)


def _threshold(alpha: float, n_tests: np.ndarray, n_draws: int | None) -> np.ndarray:
    """The one-sided z a single declared link must reach, per network (inf where the draws
    cannot give so small a p)."""
    p = alpha / np.asarray(n_tests, np.float64)
    z = stats.norm.isf(p)
    if n_draws is not None:
        z = np.where(p < 1.0 / (1.0 + int(n_draws)), np.inf, z)
    return np.atleast_1d(z)


def _solve(gain: np.ndarray, c: np.ndarray, V0: np.ndarray, z_a: np.ndarray, power: float,
           min_effect: float) -> np.ndarray:
    """The smallest R² on :data:`_GRID` whose power reaches ``power`` (interpolated in log R²);
    ``z_a`` per network."""
    k, n_net = V0.shape
    rho = _GRID[:, None, None]
    z_a = np.broadcast_to(z_a, (n_net,))[None, None, :]
    g, cc, v0 = gain[None, :, None], c[None, :, None], np.maximum(V0[None], 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.sqrt(rho) * g - z_a * np.sqrt(rho * cc + (1 - rho) * v0)) / np.sqrt((1 - rho) * v0)
    target = stats.norm.isf(1 - power)
    reached = z >= target
    first = np.argmax(reached, axis=0)  # the first grid point with the power
    out = np.full((k, n_net), np.inf)
    ok = reached.any(axis=0)
    i = first[ok]
    lo = np.maximum(i - 1, 0)
    zk = z[:, ok]
    cols = np.arange(ok.sum())
    z_lo, z_hi = zk[lo, cols], zk[i, cols]
    frac = np.where((i > 0) & (z_hi > z_lo), (target - z_lo) / np.where(z_hi > z_lo, z_hi - z_lo, 1.0), 1.0)
    logr = np.log(_GRID)
    out[ok] = np.exp(logr[lo] + np.clip(frac, 0, 1) * (logr[i] - logr[lo]))
    return np.maximum(out, float(min_effect) ** 2)


def sensitivity_summary(r2: np.ndarray, *, n_subjects: int, n_volumes: int, n_tests: int, alpha: float,
                        network_names=None, atlas_names=None, power: float = POWER,
                        unit: str = "network voxel") -> dict[str, Any]:
    """The detectable R² in numbers and one plain sentence (``summary.json``, the verdict).

    Parameters
    ----------
    r2 : ndarray of shape (k, n_networks)
        From :func:`detectable_r2`.
    n_subjects, n_volumes, n_tests : int
    alpha : float
    network_names, atlas_names : list of str, optional
    unit : str
        What the R² is of, in the sentence ("network voxel", or "region" for region data).

    Returns
    -------
    dict
        ``median``, ``p10``, ``p90``, ``best`` (the smallest over atoms × networks),
        ``per_network`` (median over atoms), the design, ``definition`` and ``text``.
    """
    r2 = np.asarray(r2, np.float64)
    finite = r2[np.isfinite(r2)]
    k, n_net = r2.shape
    names = [f"{a}:{n}" if a else str(n) for a, n in zip(atlas_names or [""] * n_net,
                                                           network_names or range(n_net))]

    def q(values, level):  # nearest order statistic: an undetectable pair (inf) counts, never interpolated
        return float(np.quantile(values, level, method="nearest")) if np.size(values) else float("nan")

    def num(v):
        return None if not np.isfinite(v) else round(float(v), 4)

    med = q(r2, 0.5)
    out = {"power": power, "alpha": alpha, "n_tests": int(n_tests), "n_subjects": int(n_subjects),
           "n_volumes": int(n_volumes), "n_atoms": int(k), "n_networks": int(n_net),
           "median": num(med), "p10": num(q(r2, 0.1)), "p90": num(q(r2, 0.9)),
           "best": num(finite.min()) if finite.size else None,
           "n_undetectable": int((~np.isfinite(r2)).sum()),
           "per_network": {nm: num(q(r2[:, j], 0.5)) for j, nm in enumerate(names)},
           "definition": "a network driver: one atom's time course explains this share (R2) of the variance of "
                         "every voxel of the network; detected: declared by the association test at its FDR level "
                         "as the only link of its family (semi-analytic, from the run's own mean network series "
                         "as noise; napari_brainorg.networks.sensitivity)"}
    if finite.size == 0:
        out["text"] = (f"This design cannot declare any link: with {n_tests} tests in the FDR family the null draws "
                       f"cannot give a p-value small enough (more draws, fewer atoms or networks would).")
        return out
    spread = (f"{out['p10']:.3f}-{out['p90']:.3f}" if out["p90"] is not None
              else f"from {out['best']:.3f}; {out['n_undetectable']} atom x network pairs not at all")
    out["text"] = (f"With {n_subjects} subject{'s' if n_subjects != 1 else ''} and {n_volumes} volumes, this design "
                   f"detects (power {power:.0%}) a network driver explaining R2 >= "
                   + (f"{med:.3f}" if np.isfinite(med) else "(more than half of the pairs: never)")
                   + f" of each {unit}'s variance (median over {k} atoms x {n_net} networks; 10-90%: "
                   f"{spread}; best {out['best']:.3f}); a weaker driver can go undetected.")
    return out
