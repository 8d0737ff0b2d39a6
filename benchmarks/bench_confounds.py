"""Atoms and the word rate: raw (paper) vs centred activations; signs; reproducibility.

On the bundled pieman story (300 volumes, TR 1.5 s) and a bundled model, the ANs are
extracted twice: the paper's raw form (``center_words=False``) and centred word
activations (the default). A dictionary (k atoms, alpha 0.15, random start) is learned
from each, and for each the script prints

- the correlation of atom 0 and the largest |r| of any atom with the word rate
  (``features.nuisance``), and how many atoms have |r| > 0.3;
- how many atoms have mostly negative member codes before the sign rule
  (``sparse.atoms.orient_atoms``);
- the fraction of atoms reproduced (matched |r| >= 0.9, Hungarian) from other starts.

Run:  nice -n 10 python benchmarks/bench_confounds.py [--model minilm --k 64 --starts 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--story", default="pieman")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.15)
    parser.add_argument("--starts", type=int, default=3, help="starts (seeds 0..starts-1) for reproducibility")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--init", default="random", choices=["random", "svd"])
    args = parser.parse_args()

    from napari_brainorg.features.extract import extract_an_responses
    from napari_brainorg.features.nuisance import nuisance_regressors
    from napari_brainorg.io.stimuli import read_story
    from napari_brainorg.sparse.atoms import orient_atoms
    from napari_brainorg.sparse.dictionary import SparseDictionary
    from napari_brainorg.sparse.selection import match_atoms

    warnings.simplefilter("ignore")
    words = read_story(args.story)
    tr, n_volumes = 1.5, 300
    rate = nuisance_regressors(words, tr, n_volumes)["word_rate"].to_numpy()
    print(f"{args.model} on {args.story}: {n_volumes} volumes, k={args.k}, alpha={args.alpha}, init={args.init}")
    with tempfile.TemporaryDirectory() as tmp:
        for center in (False, True):
            t0 = time.perf_counter()
            ans = extract_an_responses(words, args.model, tr=tr, n_volumes=n_volumes, center_words=center,
                                       cache_dir=f"{tmp}/{center}")
            X = ans.responses
            r_ans = rate @ X / n_volumes
            t1 = time.perf_counter()
            runs = []
            for seed in range(args.starts):
                est = SparseDictionary(n_atoms=args.k, alpha=args.alpha, max_iter=args.max_iter, init=args.init,
                                       random_state=seed).fit(np.ascontiguousarray(X.T))
                runs.append((est.atoms_, est.codes_))
            t2 = time.perf_counter()
            D, A = runs[0]
            negative = sum(int((np.sign(A[j][A[j] != 0]).sum()) < 0) for j in range(A.shape[0]))
            D, A, flipped = orient_atoms(D, A)
            r = np.array([np.corrcoef(D[:, j], rate)[0, 1] for j in range(D.shape[1])])
            fractions = [float((match_atoms(runs[0][0], runs[s][0])[2] >= 0.9).mean()) for s in range(1, len(runs))]
            label = "centred" if center else "raw (paper)"
            print(f"  {label:12s} ANs {X.shape[1]}: median |r(AN, word rate)| {np.median(np.abs(r_ans)):.3f}; "
                  f"atom 0 r {r[0]:+.3f}, max |r| {np.abs(r).max():.3f} (atom {int(np.abs(r).argmax())}), "
                  f"atoms |r|>0.3: {int((np.abs(r) > 0.3).sum())}/{len(r)}; mostly-negative atoms before the "
                  f"sign rule {negative} (flipped {int(flipped.sum())}); reproduced at |r|>=0.9 from other starts "
                  f"{', '.join(f'{f:.2f}' for f in fractions) or '-'}  [extract {t1 - t0:.0f} s, "
                  f"{args.starts} dictionaries {t2 - t1:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
