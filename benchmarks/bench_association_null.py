"""False declarations of the stimulus-null association test and calibration of the atom maps.

All fMRI here is SIMULATED (small self-contained generator, known truth): networks of
voxels, AR(1) noise whose coefficient depends on the tissue (0.6 in network,
"grey-matter-like", voxels, 0.2 elsewhere), slow network-structured fluctuations that
are spatially smooth and independent across subjects, a slow drift, and 64 smooth,
overlapping atoms. For every seed it prints:

- null data (no atom drives anything): declared associations (every one is false);
- planted data (4 atoms drive 4 networks, up or down) tested with phase-randomised
  copies of the atoms (no lock to the story): declared associations (all false);
- the same planted data with the real atoms: planted links found, other declarations;
- voxel maps: P(|z| > 1.96) of the GLS z under AR(1) 0.4 and 0.6 (OLS beside it).

A test that controls the FDR at 0.05 declares, when every null is true, at least one
association in at most 5 % of the runs.

    python benchmarks/bench_association_null.py [--seeds 0 1 2 3 4] [--subjects 8] [--draws 10000]
        [--planted-networks 7 --r2 0.15] [--moved conditional|unique|all]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.ndimage import gaussian_filter1d

TR = 1.5


def ar1(rng, rho, n, v):
    rho = np.broadcast_to(np.asarray(rho, float), (v,))
    e = rng.standard_normal((n + 30, v))
    for t in range(1, n + 30):
        e[t] += rho * e[t - 1]
    return e[30:]


def make_atoms(rng, n=300, k=64, smooth=2.5):
    """Smooth overlapping atoms: with ``smooth`` 2.5 (volumes) each one's unique part is about
    4 % of its variance (the demo's MiniLM atoms: 2-9 %); 1.5: about 18 %."""
    base = gaussian_filter1d(rng.standard_normal((n, k)), smooth, axis=0)
    mix = np.eye(k) + 0.6 * rng.standard_normal((k, k)) / np.sqrt(k)
    return base @ mix


def make_study(rng, atoms, n_subjects, planted=None, n_net=7, per_net=150, n_other=500, r2=0.08):
    n = atoms.shape[0]
    V = n_net * per_net + n_other
    networks = np.zeros((n_net, V), bool)
    for i in range(n_net):
        networks[i, i * per_net:(i + 1) * per_net] = True
    rho = np.where(networks.any(0), 0.6, 0.2)
    weights = gaussian_filter1d(networks.astype(float), 5, axis=1) + 0.3 * networks
    data = []
    for _ in range(n_subjects):
        Y = ar1(rng, rho, n, V)
        Y /= Y.std(0)
        fluct = ar1(rng, 0.9, n, n_net)
        Y += 0.7 * (fluct / fluct.std(0)) @ weights
        Y += np.cumsum(rng.standard_normal((n, 1)), 0) / np.sqrt(n)
        for atom, (net, sign) in (planted or {}).items():
            a = atoms[:, atom] - atoms[:, atom].mean()
            a /= a.std()
            amp = np.sqrt(r2 / (1 - r2)) * Y[:, networks[net]].std(0)
            Y[:, networks[net]] += sign * a[:, None] * amp
        data.append(Y.astype(np.float32))
    return data, networks


def declared(table):
    t = table[table["associated"]]
    return {(int(a), int(n), d) for a, n, d in t[["atom", "network", "direction"]].itertuples(index=False)}


def main() -> None:
    from napari_brainorg.encoding.glm import gls_atom_maps, ols_zmaps
    from napari_brainorg.encoding.inference import phase_randomise
    from napari_brainorg.encoding.preprocessing import drift_basis, highpass
    from napari_brainorg.networks.association import stimulus_association

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--subjects", type=int, nargs="+", default=[8, 3])
    parser.add_argument("--draws", type=int, default=10000)
    parser.add_argument("--null", default="phase", choices=["phase", "shift"])
    parser.add_argument("--moved", default="auto", choices=["auto", "all", "conditional", "unique"])
    parser.add_argument("--planted-networks", type=int, default=4, choices=range(1, 8),
                        help="networks driven in the planted data (atoms 3, 10, 20, ... each drive one)")
    parser.add_argument("--refine", type=int, default=20000, help="further draws for cells at the floor")
    parser.add_argument("--contribution", default="unique", choices=["unique", "marginal"])
    parser.add_argument("--maps", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--smooth", type=float, default=2.5, help="atom smoothness (volumes): collinearity")
    parser.add_argument("--r2", type=float, default=0.08, help="planted R2 in the network's voxels")
    args = parser.parse_args()
    planted = ({3: (0, 1), 10: (2, -1), 20: (4, 1), 30: (6, 1)} if args.planted_networks == 4 else
               dict(list({3: (0, 1), 10: (1, -1), 20: (2, 1), 30: (3, 1), 40: (4, -1), 50: (5, 1),
                          60: (6, 1)}.items())[:args.planted_networks]))
    truth = {(a, n, "activated" if s > 0 else "deactivated") for a, (n, s) in planted.items()}
    kw = dict(tr=TR, n_permutations=args.draws, n_refine=args.refine, null=args.null, min_effect=0.0, min_relative_effect=0.0,
              moved=args.moved, contribution=args.contribution)
    print(f"planted data: {len(planted)} networks driven at R2 {args.r2:g}")
    print(f"stimulus null: {args.null}, {args.draws} draws (+{args.refine} at the floor), moved {args.moved}, {args.contribution} contribution; 64 atoms x 7 networks x 2 directions = 896 tests; "
          "no effect-size rule (q < 0.05 alone)")
    totals = {}
    for n_sub in args.subjects:
        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            t0 = time.perf_counter()
            atoms = make_atoms(rng, smooth=args.smooth)
            data, nets = make_study(rng, atoms, n_sub)
            null = stimulus_association(atoms, data, nets, random_state=seed, **kw)
            frac = float(np.mean(null["p"] <= 0.05))
            sp = None
            data, nets = make_study(rng, atoms, n_sub, planted=planted, r2=args.r2)
            surrogate = stimulus_association(phase_randomise(atoms, random_state=seed + 100), data, nets,
                                             random_state=seed, **kw)
            sp = surrogate["p"].to_numpy()
            real = stimulus_association(atoms, data, nets, random_state=seed, **kw)
            found = declared(real)
            row = (len(declared(null)), len(declared(surrogate)), len(found & truth), len(found - truth))
            for key, v in zip(("null", "surrogate", "found", "other"), row):
                totals.setdefault((n_sub, key), []).append(v)
            print(f"subjects {n_sub} ({null.attrs['group_effects']} effects) seed {seed}: null data declared "
                  f"{row[0]} (p<=0.05: {frac:.3f}); surrogate atoms declared {row[1]} (p<=0.05: {np.mean(sp <= 0.05):.3f}, "
                  f"p<=0.01: {np.mean(sp <= 0.01):.4f}, p<=0.002: {np.mean(sp <= 0.002):.4f}); real atoms: planted "
                  f"found {row[2]}/{len(truth)}, other declared {row[3]}  [{time.perf_counter() - t0:.1f} s]")
    for (n_sub, key), v in totals.items():
        print(f"subjects {n_sub}: {key}: total {sum(v)} over {len(v)} seeds, runs with any: "
              f"{sum(x > 0 for x in v)}")

    if not args.maps:
        return
    print("\natom maps, P(|z| > 1.96) on no-signal voxels (64 atoms, 300 volumes, 3000 voxels)")
    for rho in (0.4, 0.6):
        rates, rates_ols = [], []
        for seed in args.seeds:
            rng = np.random.default_rng(1000 + seed)
            X = make_atoms(rng)
            Y = ar1(rng, rho, 300, 3000)
            drift = drift_basis(300, TR, 128.0)
            rates.append(np.mean(np.abs(gls_atom_maps(X, Y, nuisance=drift).z) > 1.96))
            rates_ols.append(np.mean(np.abs(ols_zmaps(highpass(X, TR), highpass(Y, TR),
                                                      n_nuisance=drift.shape[1] + 1)) > 1.96))
        print(f"AR(1) {rho}: GLS {' '.join(f'{r:.4f}' for r in rates)} (mean {np.mean(rates):.4f}); "
              f"OLS mean {np.mean(rates_ols):.3f}")


if __name__ == "__main__":
    main()
