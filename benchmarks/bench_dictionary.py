"""Dictionary learning over ANs: napari-brainorg's learner vs scikit-learn's.

Simulated (clearly labelled) AN responses with planted atoms: k smooth unit-norm
time courses, each AN a sparse combination of about 3 of them plus white noise
(signal-to-noise 4 in variance), columns z-scored. Both learners get the same
data and the same λ = alpha * sqrt(n_volumes); both objectives
0.5 ||X - D A||_F^2 + λ ||A||_1 are computed by one formula, scikit-learn's
dictionary with its codes refit by our FISTA and by its own lasso (the better of
the two is reported). Recovery: the learnt atoms matched to the planted ones by
the Hungarian algorithm on |Pearson r|; the mean matched |r|.

Run:  nice -n 10 python benchmarks/bench_dictionary.py [--n-ans 10000 --n-volumes 300 --k 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

import numpy as np
from napari_brainorg.sparse.planted import planted_ans


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-ans", type=int, default=10_000)
    parser.add_argument("--n-volumes", type=int, default=300)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.15, help="λ = alpha * sqrt(n_volumes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch", "auto"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", action="store_true",
                        help="also run scikit-learn's DictionaryLearning (batch; slow)")
    parser.add_argument("--encode-columns", type=int, default=200_000,
                        help="columns for the sparse_encode throughput line (0 to skip)")
    args = parser.parse_args()

    from scipy.optimize import linear_sum_assignment  # noqa: F401  (import before timing)
    from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning
    from sklearn.decomposition import sparse_encode as sk_sparse_encode

    from napari_brainorg.sparse.dictionary import dictionary_objective, learn_dictionary, sparse_encode
    from napari_brainorg.sparse.selection import matched_correlation

    if args.backend != "numpy":
        import torch  # noqa: F401  (imported before timing)
    X, planted = planted_ans(args.n_volumes, args.n_ans, args.k, random_state=args.seed)
    lam = args.alpha * np.sqrt(args.n_volumes)
    print(f"SIMULATED data: {args.n_ans} ANs x {args.n_volumes} volumes, k={args.k} planted atoms, "
          f"~3 atoms per AN, SNR 4; lambda={lam:.4f} (alpha {args.alpha}); "
          f"threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cores {os.cpu_count()}")

    (D, A, info), wall, cpu = timed(lambda: learn_dictionary(
        X, args.k, lam, backend=args.backend, device=args.device, random_state=args.seed))
    ours = dictionary_objective(X, D, A, lam)
    print(f"napari-brainorg learn_dictionary ({args.backend}): {wall:8.2f} s wall, {cpu:8.2f} s CPU, "
          f"{info['n_iter']} iterations, {info['n_replaced']} atom swaps, converged={info['converged']}, "
          f"objective {ours:.6e}, recovery {matched_correlation(planted, D):.4f}")

    def sklearn_objective(dictionary):
        D_sk = dictionary.T
        refit = sparse_encode(X, D_sk, lam, tol=1e-6, max_iter=3000)
        own = sk_sparse_encode(X.T, dictionary, alpha=lam, algorithm="lasso_cd", max_iter=3000).T
        return min(dictionary_objective(X, D_sk, refit, lam), dictionary_objective(X, D_sk, own, lam))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mb, mb_wall, mb_cpu = timed(lambda: MiniBatchDictionaryLearning(
            n_components=args.k, alpha=lam, random_state=args.seed).fit(X.T))
    mb_obj = sklearn_objective(mb.components_)
    print(f"scikit-learn MiniBatchDictionaryLearning:        {mb_wall:8.2f} s wall, {mb_cpu:8.2f} s CPU, "
          f"{mb.n_iter_:.0f} epochs ({mb.n_steps_} steps), objective {mb_obj:.6e}, "
          f"recovery {matched_correlation(planted, mb.components_.T):.4f}")
    print(f"  time ratio (MiniBatch / ours): {mb_wall / wall:.1f}x wall, {mb_cpu / cpu:.1f}x CPU; "
          f"objective ours - MiniBatch = {ours - mb_obj:+.6e} ({(ours - mb_obj) / mb_obj:+.3%})")

    if args.batch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dl, dl_wall, dl_cpu = timed(lambda: DictionaryLearning(
                n_components=args.k, alpha=lam, fit_algorithm="cd", random_state=args.seed).fit(X.T))
        dl_obj = sklearn_objective(dl.components_)
        print(f"scikit-learn DictionaryLearning (cd):           {dl_wall:8.2f} s wall, {dl_cpu:8.2f} s CPU, "
              f"{dl.n_iter_} iterations, objective {dl_obj:.6e}, "
              f"recovery {matched_correlation(planted, dl.components_.T):.4f}")
        print(f"  time ratio (batch / ours): {dl_wall / wall:.1f}x wall; objective ours - batch = "
              f"{ours - dl_obj:+.6e} ({(ours - dl_obj) / dl_obj:+.3%})")

    if args.encode_columns:
        rng = np.random.default_rng(1)
        Y = (D @ (rng.standard_normal((args.k, args.encode_columns))
                  * (rng.random((args.k, args.encode_columns)) < 0.05))
             + rng.standard_normal((args.n_volumes, args.encode_columns))).astype(np.float32)
        _, e_wall, e_cpu = timed(lambda: sparse_encode(Y, D, lam, backend=args.backend, device=args.device))
        print(f"sparse_encode, {args.encode_columns} columns x {args.n_volumes} volumes, k={args.k}: "
              f"{e_wall:.2f} s wall, {e_cpu:.2f} s CPU ({args.encode_columns / e_wall:,.0f} columns/s)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
