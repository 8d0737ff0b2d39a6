"""Time the cross-validated ridge against himalaya's RidgeCV.

Simulated data (labelled as such): X (n_volumes × n_features) smooth regressors,
Y = X W + noise (float32) with a sparse W, i.e. a known set of driven voxels.

Compared like with like:

- himalaya ``RidgeCV(alphas, cv=folds, fit_intercept=True)``: single-level CV (choose
  each voxel's α on the folds, refit on all volumes), centred regressors, mean negative
  MSE as the criterion;
- ours, single level: ``ridge_cv_fit(..., alpha_score="neg_mse", standardize=False)``,
  the same procedure on the same folds; chosen α, coefficients and predictions are
  compared with himalaya's;
- ours, nested: ``cv_ridge_scores`` (α chosen by an inner 4-fold CV inside each of the
  5 training folds, held-out R² and r per fold), which himalaya does not do in one
  call, before and after: ``path="predictions"`` (every α's test predictions formed,
  the implementation up to issue 10, still the torch path) and ``path="spectral"``
  (the default on numpy: the α path's test errors from the factorisation); chosen α
  and scores of the two are compared; the spectral path with every factor's projections
  from the fold sums (one pass over the fMRI, the default) against each factor's own
  products with U and B (before); and the whole ``CVRidgeEncoder.fit`` (high-pass,
  nested CV, final fit). ``--n-volumes 1460 --n-voxels 15300`` is the demo's shape.

The load average is printed before and after: on a shared machine other processes
take cores, and wall times grow with them.

Run with ``nice -n 10 python benchmarks/bench_ridge.py`` (defaults: 300 volumes ×
200,000 voxels × 64 features, 15 α, 5 contiguous folds with a gap of 5).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from napari_brainorg.encoding.ridge import CVRidgeEncoder, contiguous_folds, cv_ridge_scores, ridge_cv_fit


def simulate(n_volumes: int, n_voxels: int, n_features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    kernel = np.exp(-np.arange(8) / 2.0)
    X = np.apply_along_axis(lambda c: np.convolve(c, kernel)[:n_volumes], 0,
                            rng.standard_normal((n_volumes, n_features)))
    W = rng.standard_normal((n_features, n_voxels)).astype(np.float32)
    W *= rng.random((n_features, n_voxels)) < 0.05
    W *= rng.random(n_voxels) < 0.3                     # 30 % of voxels are driven
    Y = (X.astype(np.float32) @ W) * 0.3
    Y += rng.standard_normal((n_volumes, n_voxels), dtype=np.float32)
    return X.astype(np.float32), Y


def timed(label: str, fn, repeat: int):
    """Best wall time of ``repeat`` runs, with the CPU time of that run (all threads)."""
    best, cpu = np.inf, np.inf
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    print(f"{label:<52s} wall {best:8.2f} s   cpu {cpu:8.2f} s")
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-volumes", type=int, default=300)
    ap.add_argument("--n-voxels", type=int, default=200_000)
    ap.add_argument("--n-features", type=int, default=64)
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--gap", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    ap.add_argument("--backend", default="numpy", help="numpy or torch (ours)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--himalaya-batch", type=int, default=None,
                    help="himalaya's n_targets_batch (default: all voxels at once)")
    ap.add_argument("--skip-himalaya", action="store_true")
    ap.add_argument("--skip-nested", action="store_true")
    ap.add_argument("--skip-before", action="store_true", help="do not time the nested CV's previous path")
    args = ap.parse_args()

    alphas = np.logspace(-1, 6, 15)
    X, Y = simulate(args.n_volumes, args.n_voxels, args.n_features)
    folds = contiguous_folds(args.n_volumes, args.n_folds, args.gap)
    import threadpoolctl

    threads = threadpoolctl.threadpool_info()
    print(f"load average before the run: {os.getloadavg()}")
    print(f"simulated data: X {X.shape}, Y {Y.shape} float32; {len(alphas)} alphas; "
          f"{args.n_folds} contiguous folds, gap {args.gap}; CPU cores {os.cpu_count()}; "
          f"BLAS {[(t['internal_api'], t['num_threads']) for t in threads]}")

    ours, t_ours = timed(
        f"ours single-level ridge_cv_fit ({args.backend})",
        lambda: ridge_cv_fit(X, Y, folds, alphas, alpha_score="neg_mse", standardize=False,
                             backend=args.backend, device=args.device),
        args.repeat,
    )

    if not args.skip_himalaya:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV

        set_backend("numpy", on_error="raise")
        solver_params = {"n_targets_batch": args.himalaya_batch} if args.himalaya_batch else None
        ref, t_ref = timed(
            "himalaya RidgeCV (numpy backend)",
            lambda: RidgeCV(alphas=alphas, cv=folds, fit_intercept=True,
                            solver_params=solver_params).fit(X, Y),
            args.repeat,
        )
        print(f"{'ratio himalaya / ours (single level)':<52s} {t_ref / t_ours:9.2f} x")
        same = np.isclose(ours.alpha, ref.best_alphas_, rtol=1e-5)
        log_diff = np.abs(np.log10(ours.alpha) - np.log10(np.asarray(ref.best_alphas_)))
        print(f"chosen alpha identical in {same.mean() * 100:.3f} % of voxels; "
              f"max |log10 ratio| {log_diff.max():.3g} (different grid step: {int((~same).sum())} voxels)")
        if (~same).any():
            # Where the choices differ, how far apart are the two α in our own CV score?
            # A near-tie (float32 rounding, himalaya's tiny tie-break towards larger α)
            # shows as a relative gap of order 1e-6.
            cols = np.flatnonzero(~same)
            ref_idx = np.searchsorted(ours.alphas, np.asarray(ref.best_alphas_)[cols] * (1 - 1e-6))
            ours_idx = np.searchsorted(ours.alphas, ours.alpha[cols] * (1 - 1e-6))
            s_ours = ours.cv_scores[ours_idx, cols]
            s_ref = ours.cv_scores[ref_idx, cols]
            gap = np.abs(s_ours - s_ref) / np.maximum(np.abs(s_ours), 1e-12)
            print(f"  where they differ, relative gap of the CV score between the two alphas: max {gap.max():.2g}")
        sample = np.random.default_rng(1).choice(args.n_voxels, size=min(args.n_voxels, 20_000), replace=False)
        pred_ours = ours.predict(X)[:, sample]
        pred_ref = np.asarray(ref.predict(X))[:, sample]
        rows = same[sample]
        diff = np.abs(pred_ours - pred_ref)[:, rows]
        print(f"predictions (same alpha, {rows.sum()} sampled voxels): max |diff| {diff.max():.3g}, "
              f"relative to max |pred| {diff.max() / np.abs(pred_ref).max():.3g}")
        coef_diff = np.abs(ours.coef[:, sample][:, rows] - np.asarray(ref.coef_)[:, sample][:, rows])
        print(f"coefficients (same alpha): max |diff| {coef_diff.max():.3g}")
        del ref

    if not args.skip_nested:
        nested_args = dict(inner_folds=4, gap=args.gap, backend=args.backend, device=args.device)
        before = None
        if not args.skip_before and args.backend == "numpy":
            print(f"load average now: {os.getloadavg()}")
            before, t_before = timed(
                f"BEFORE nested cv_ridge_scores path=predictions ({args.n_folds} x 4 folds)",
                lambda: cv_ridge_scores(X, Y, folds, alphas, path="predictions", **nested_args),
                args.repeat,
            )
        print(f"load average now: {os.getloadavg()}")
        nested, t_nested = timed(
            f"AFTER  nested cv_ridge_scores path=auto ({'spectral' if args.backend == 'numpy' else 'predictions'})",
            lambda: cv_ridge_scores(X, Y, folds, alphas, **nested_args),
            args.repeat,
        )
        print(f"  held-out R2: mean {nested.r2.mean():.4f}, voxels with R2 > 0.05: "
              f"{(nested.r2 > 0.05).mean() * 100:.1f} %")
        if before is not None:
            same = before.alpha_folds == nested.alpha_folds
            print(f"{'speed-up before / after':<52s} {t_before / t_nested:9.2f} x")
            print(f"  chosen alpha identical in {same.mean() * 100:.4f} % of voxel x fold; max |R2 diff| "
                  f"{np.abs(before.r2_folds - nested.r2_folds).max():.3g}, max |r diff| "
                  f"{np.abs(before.r_folds - nested.r_folds).max():.3g} (float32 data)")
            del before
        if args.backend == "numpy":
            # the fold sums (one pass over the fMRI for every factor) against each factor's
            # own projections with U and B, the path before them
            import napari_brainorg.encoding.ridge as ridge_module

            real_plan = ridge_module.segment_plan
            ridge_module.segment_plan = lambda factors, X: None
            try:
                print(f"load average now: {os.getloadavg()}")
                own, t_own = timed("BEFORE nested, each factor's own projections", lambda: cv_ridge_scores(
                    X, Y, folds, alphas, **nested_args), args.repeat)
            finally:
                ridge_module.segment_plan = real_plan
            print(f"{'speed-up own projections / fold sums':<52s} {t_own / t_nested:9.2f} x")
            print(f"  chosen alpha identical in {(own.alpha_folds == nested.alpha_folds).mean() * 100:.4f} % of "
                  f"voxel x fold; max |R2 diff| {np.abs(own.r2_folds - nested.r2_folds).max():.3g}, max |r diff| "
                  f"{np.abs(own.r_folds - nested.r_folds).max():.3g}")
            del own
        print(f"load average now: {os.getloadavg()}")
        _, t_fit = timed(
            "ours CVRidgeEncoder.fit (high-pass + nested + final)",
            lambda: CVRidgeEncoder(alphas=alphas, n_folds=args.n_folds, gap=args.gap, tr=1.5,
                                   backend=args.backend, device=args.device).fit(X, Y),
            args.repeat,
        )
        if not args.skip_himalaya:
            print(f"{'ratio nested (ours) / single level (himalaya)':<52s} {t_nested / t_ref:9.2f} x")
    print(f"load average after the run: {os.getloadavg()}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of the process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
