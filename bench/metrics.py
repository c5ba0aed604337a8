"""Timings of the ATM'22 metrics, tree extraction and route planning on the real ATM'22 team masks.

Usage: .venv/bin/python bench/metrics.py [--shared DIR] [--cases 224 305 307] [--render /tmp/atm_tree_224.png]

For each case, timi's mask is the reference: the other teams are evaluated
against it (the first evaluation pays for the GT skeleton, printed apart), then
every team's tree is extracted and a route is planned to a point 8 mm beyond
the most distal centerline point of the right lower lobe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from clinseg.io import read_volume
from clinseg.metrics.airway import AirwayReference, airway_metrics
from clinseg.post.route import plan_route
from clinseg.post.tree import LOBAR, extract_tree
from clinseg.shared import shared_dir

TEAMS = ("timi", "YangLab", "SanmedAI", "neu204", "deeptree_damo")
ABBREVIATIONS = {
    "Trachea": "T", "RightMainBronchus": "RMB", "LeftMainBronchus": "LMB", "RightUpperLobeBronchus": "RUL",
    "BronchusIntermedius": "BI", "RightMiddleLobeBronchus": "RML", "RightLowerLobeBronchus": "RLL",
    "LeftUpperLobeBronchus": "LUL", "LeftLowerLobeBronchus": "LLL",
}


def route_target(tree) -> np.ndarray:
    """8 mm beyond the right lower lobe's most caudal centerline end (or the tree's, without a name)."""
    ends = [b for b in tree.branches if not b.children and (b.lobe == "RightLowerLobe" or not tree.named(LOBAR[2]))]
    tip = min(ends, key=lambda b: b.points_lps[-1][2])
    direction = tip.points_lps[-1] - tip.points_lps[max(len(tip.points_lps) - 6, 0)]
    return tip.points_lps[-1] + 8.0 * direction / max(np.linalg.norm(direction), 1e-9)


def render(tree, path: Path, title: str) -> None:
    """Anterior 3-D views of the centerlines coloured by generation: whole tree, and the central airways with the
    named bronchi labelled at their distal ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    top = max(b.generation for b in tree.branches)
    carina = tree.carina_lps
    fig = plt.figure(figsize=(16, 8))
    for n, (label, max_generation) in enumerate([("whole tree", top), ("central airways, generations 0-4", 4)]):
        ax = fig.add_subplot(1, 2, n + 1, projection="3d")
        for b in tree.branches:
            if b.generation > max_generation:
                continue
            p = b.points_lps
            ax.plot(p[:, 0], p[:, 1], p[:, 2], color=cmap(b.generation / max(top, 1)),
                    lw=max(0.4, min(b.mean_radius_mm, 6) / 1.2) * (1 + n))
            parent_name = tree.branches[b.parent].name if b.parent is not None else None
            if n == 1 and b.name in ABBREVIATIONS and b.name != parent_name:
                ax.text(*p[-1], ABBREVIATIONS[b.name], fontsize=13, color="red", weight="bold")
        if n == 1:
            ax.set_xlim(carina[0] - 60, carina[0] + 60)
            ax.set_ylim(carina[1] - 60, carina[1] + 60)
            ax.set_zlim(carina[2] - 80, carina[2] + 40)
        ax.view_init(elev=5, azim=-90)  # camera in front of the patient: patient's right on the viewer's left
        ax.set_xlabel("x (mm, patient left +)")
        ax.set_zlabel("z (mm, superior +)")
        ax.set_title(f"{title}: {label}, anterior view")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top))
    fig.colorbar(sm, ax=fig.axes, shrink=0.6, label="generation")
    fig.text(0.01, 0.01, "  ".join(f"{v}={k}" for k, v in ABBREVIATIONS.items()), fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=shared_dir())
    parser.add_argument("--cases", nargs="+", default=["224", "305", "307"])
    parser.add_argument("--render", type=Path, help="PNG of timi's tree for the first case")
    args = parser.parse_args()
    if args.shared is None:
        raise SystemExit("shared data folder not found (pass --shared)")
    root = args.shared / "data" / "atm22_airways"
    for case in args.cases:
        t = time.perf_counter()
        volumes = {team: read_volume(root / team / f"ATM_{case}.nii.gz") for team in TEAMS}
        gt = volumes["timi"]
        print(f"ATM_{case}: grid {gt.size_ijk} spacing {tuple(round(s, 3) for s in gt.spacing)}; "
              f"read {len(TEAMS)} masks in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        ref = AirwayReference.from_mask(gt.array)
        print(f"  GT skeleton + branch parsing: {time.perf_counter() - t:.2f} s "
              f"({len(ref.skeleton)} voxels, {ref.n_branches} branches)")
        for team in TEAMS[1:]:
            t = time.perf_counter()
            m = airway_metrics(volumes[team], ref)
            dt = time.perf_counter() - t
            print(f"  {team:>14} vs timi: metrics {dt:.2f} s (cached GT)  DSC {100 * m['dice']:.2f}  "
                  f"TD {100 * m['td']:.2f}  BD {100 * m['bd']:.2f}  precision {100 * m['precision']:.2f}  "
                  f"FPR {100 * m['fpr']:.4f}")
        for team in TEAMS:
            t = time.perf_counter()
            tree = extract_tree(volumes[team])
            t_tree = time.perf_counter() - t
            t = time.perf_counter()
            route = plan_route(tree, route_target(tree), scope_diameter_mm=4.2)
            t_route = time.perf_counter() - t
            named = sum(tree.named(n) is not None for n in ABBREVIATIONS)
            stop = route.scope_stop["name"] or f"Branch {route.scope_stop['branch_id']}" if route.scope_stop else "-"
            print(f"  {team:>14} tree {t_tree:.2f} s: {len(tree.branches)} branches, max generation "
                  f"{max(b.generation for b in tree.branches)}, {named}/9 named, loops broken {tree.loops_broken}, "
                  f"spurs {tree.spurs_pruned}; route {t_route * 1000:.0f} ms: {route.path_length_mm:.0f} mm, "
                  f"{len(route.branches)} branches, narrowest {route.narrowest_diameter_mm:.1f} mm, "
                  f"4.2 mm scope stops in {stop}")
            if args.render and team == "timi" and case == args.cases[0]:
                render(tree, args.render, f"ATM_{case} timi")
                print(f"  rendered {args.render}")


if __name__ == "__main__":
    main()
