"""Airway tree from a binary mask: centerline branches with generations, anatomical names and lumen radii.

Steps: largest component + hole filling -> 3-D thinning on the bounding box ->
skeleton graph (``skeleton.py``) -> spur pruning -> root (trachea) detection ->
loop breaking -> branches oriented proximal to distal -> very short internal
segments folded into their parent (so a trifurcation drawn as two close
bifurcations counts as one generation) -> names down to lobar bronchi.

Frame: LPS mm (patient's left = +x, posterior = +y, superior = +z).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import edt
import fill_voids
import numpy as np

from ..errors import InputError
from ..result import Curve, Table
from ..volume import Volume
from .components import Island, labelled_components
from .skeleton import SkeletonGraph, close, extend_open_sides, open_sides, skeletonize

TRACHEA = "Trachea"
RIGHT_MAIN = "RightMainBronchus"
LEFT_MAIN = "LeftMainBronchus"
RIGHT_UPPER = "RightUpperLobeBronchus"
INTERMEDIUS = "BronchusIntermedius"
RIGHT_MIDDLE = "RightMiddleLobeBronchus"
RIGHT_LOWER = "RightLowerLobeBronchus"
LEFT_UPPER = "LeftUpperLobeBronchus"
LEFT_LOWER = "LeftLowerLobeBronchus"
LOBAR = (RIGHT_UPPER, RIGHT_MIDDLE, RIGHT_LOWER, LEFT_UPPER, LEFT_LOWER)
RIVAL_WIDTH_RATIO = 0.85  # a second cut end this wide, relative to the widest, makes the trunk ambiguous
TWIN_TREE_FRACTION = 0.25  # a second piece this large, relative to the largest, cut by the scan's edge: a lung's tree
LOBE_OF = {
    RIGHT_UPPER: "RightUpperLobe",
    RIGHT_MIDDLE: "RightMiddleLobe",
    RIGHT_LOWER: "RightLowerLobe",
    LEFT_UPPER: "LeftUpperLobe",
    LEFT_LOWER: "LeftLowerLobe",
}


@dataclass
class Branch:
    """One airway segment between two bifurcations (or a bifurcation and a tip), proximal point first."""

    id: int
    parent: int | None
    children: list[int]
    generation: int
    name: str  # anatomical name or "" (continuation pieces of a named bronchus share its name)
    points_lps: np.ndarray  # (N, 3)
    radius_mm: np.ndarray  # (N,)
    lobe: str = ""

    @property
    def arc_mm(self) -> np.ndarray:
        """Distance along the branch from its first point, per point."""
        steps = np.linalg.norm(np.diff(self.points_lps, axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(steps)])

    @property
    def length_mm(self) -> float:
        return float(self.arc_mm[-1])

    def _body(self) -> np.ndarray:
        """Radii away from the junction blobs at both ends (within one local radius of an end)."""
        arc = self.arc_mm
        keep = (arc >= self.radius_mm[0]) & (arc <= arc[-1] - self.radius_mm[-1])
        return self.radius_mm[keep] if keep.any() else self.radius_mm

    @property
    def mean_radius_mm(self) -> float:
        return float(self._body().mean())

    @property
    def min_radius_mm(self) -> float:
        return float(self._body().min())


@dataclass
class AirwayTree:
    """Branches (index = id, 0 = trachea), disconnected islands of the input mask and repair counts."""

    branches: list[Branch]
    islands: list[Island] = field(default_factory=list)
    loops_broken: int = 0
    spurs_pruned: int = 0

    @property
    def root(self) -> Branch:
        return self.branches[0]

    @property
    def carina_lps(self) -> np.ndarray:
        return self.root.points_lps[-1]

    def named(self, name: str) -> Branch | None:
        """The most proximal branch carrying ``name``."""
        return next((b for b in self.branches if b.name == name), None)

    def lineage(self, bid: int) -> list[int]:
        """Branch ids from the trachea down to ``bid``."""
        chain = [bid]
        while self.branches[chain[-1]].parent is not None:
            chain.append(self.branches[chain[-1]].parent)
        return chain[::-1]

    def curve_names(self) -> list[str]:
        """Unique display names: the anatomical name, numbered for continuation pieces, else ``Branch <id>``."""
        seen: dict[str, int] = {}
        names = []
        for b in self.branches:
            if b.name:
                seen[b.name] = seen.get(b.name, 0) + 1
                names.append(b.name if seen[b.name] == 1 else f"{b.name} ({seen[b.name]})")
            else:
                names.append(f"Branch {b.id}")
        return names

    def to_curves(self) -> list[Curve]:
        names = self.curve_names()
        curves = []
        for b in self.branches:
            attributes = {
                "branch_id": b.id,
                "generation": b.generation,
                "anatomical_name": b.name,
                "lobe": b.lobe,
                "length_mm": round(b.length_mm, 2),
                "mean_radius_mm": round(b.mean_radius_mm, 2),
                "children": [names[c] for c in b.children],
            }
            parent = names[b.parent] if b.parent is not None else None
            curves.append(Curve(names[b.id], b.points_lps.copy(), b.radius_mm.copy(), parent, attributes))
        return curves

    def to_table(self) -> Table:
        cols: dict[str, list] = {
            k: []
            for k in (
                "branch_id", "parent_id", "generation", "name", "lobe", "length_mm",
                "mean_radius_mm", "min_radius_mm", "mean_diameter_mm", "n_points",
            )
        }
        for b in self.branches:
            cols["branch_id"].append(b.id)
            cols["parent_id"].append(-1 if b.parent is None else b.parent)
            cols["generation"].append(b.generation)
            cols["name"].append(b.name)
            cols["lobe"].append(b.lobe)
            cols["length_mm"].append(round(b.length_mm, 2))
            cols["mean_radius_mm"].append(round(b.mean_radius_mm, 2))
            cols["min_radius_mm"].append(round(b.min_radius_mm, 2))
            cols["mean_diameter_mm"].append(round(2 * b.mean_radius_mm, 2))
            cols["n_points"].append(len(b.points_lps))
        return Table("airway_branches", cols)


def extract_tree(
    mask: Volume,
    root_hint_lps: np.ndarray | None = None,
    spur_factor: float = 2.0,
    min_spur_mm: float = 3.0,
    closing: int = 3,
) -> AirwayTree:
    """Centerline tree of a binary airway mask (nonzero = airway).

    ``root_hint_lps``: a point near the top of the trachea; without it the root
    is the most cranial end point among those with a wide lumen. ``closing``:
    side of the cube of a binary closing applied before thinning (1 = none);
    it fills one-voxel pits and pinholes in the wall, each of which would
    otherwise grow a spur or a loop in the skeleton.
    """
    subject = mask.name or "airway mask"
    box, labels, report, values = labelled_components(mask)
    if box is None:
        raise InputError(subject, "airway mask is empty")
    if len(values) > 1 and report[1].voxels >= TWIN_TREE_FRACTION * report[0].voxels \
            and open_sides(mask.shape, box, labels == values[1]):
        raise InputError(subject, "the scan's edge splits the airway into two trees of similar size (a scan that "
                         "starts below the carina): the trachea is not in the field of view")
    body = fill_voids.fill(labels == values[0], in_place=True)  # unpadded: same voids, up to 7x faster
    spacing_kji = np.asarray(mask.spacing[::-1], dtype=float)
    sides = open_sides(mask.shape, box, body)
    grown, inner = extend_open_sides(body, sides, spacing_kji)
    if closing > 1:
        grown = close(grown, closing)
    skeleton = skeletonize(grown)[inner]
    radius_map = edt.edt(grown.astype(np.uint8), anisotropy=tuple(spacing_kji))[inner]
    offset = np.array([s.start for s in box])
    graph = SkeletonGraph.from_skeleton(skeleton, spacing_kji, radius_map)
    graph.merge_chains()
    if not graph.edges:
        raise InputError(subject, "airway mask is too small to trace a centerline")

    def lps(voxels: np.ndarray) -> np.ndarray:
        return mask.index_to_physical((graph.coords[voxels] + offset)[:, ::-1].astype(float))

    # The trachea cut by the scan's edge is an end point on that face: fix the root before pruning.
    face_ends = _face_ends(graph, sides, body.shape)
    if root_hint_lps is None and _rival_trunks(graph, face_ends):
        raise InputError(subject, "the scan's edge cuts the airway where it divides (two cut ends of equal width): "
                         "the trachea cannot be told from the main bronchi")
    root = _find_root(graph, lps, root_hint_lps, face_ends)
    spurs = graph.prune_spurs(spur_factor, min_spur_mm, protect={root})
    if root not in graph.node_voxel:
        root = _find_root(graph, lps, None, [])
    loops = graph.break_loops(root)
    spurs += graph.prune_spurs(spur_factor, min_spur_mm, protect={root})
    graph.merge_chains({root})
    if not graph.incident[root]:
        raise InputError(subject, "airway mask is too small to trace a centerline")

    branches = _orient(graph, root, lps)
    branches = _fold_short_segments(branches)
    tree = AirwayTree(branches, islands=report[1:], loops_broken=loops, spurs_pruned=spurs)
    _name_tree(tree)
    _assign_generations(tree)
    return tree


def _face_ends(graph: SkeletonGraph, sides: list[tuple[int, int]], shape: tuple[int, ...]) -> list[int]:
    """End points lying on a side of the crop where the scan's edge cuts the airway."""
    ends = []
    for n in graph.end_nodes():
        voxel = graph.coords[graph.node_voxel[n]]
        if any(voxel[axis] == (0 if side == 0 else shape[axis] - 1) for axis, side in sides):
            ends.append(n)
    return ends


def _rival_trunks(graph: SkeletonGraph, face_ends: list[int]) -> bool:
    """Whether the widest cut ends include two of (nearly) the same width: a scan that starts within about one
    radius of the carina has its trachea's centreline leave through the edge on both sides of the division."""
    widths = sorted((_end_width(graph, n) for n in face_ends), reverse=True)
    return len(widths) > 1 and widths[1] >= RIVAL_WIDTH_RATIO * widths[0]


def _find_root(graph: SkeletonGraph, lps, hint: np.ndarray | None, face_ends: list[int]) -> int:
    """The trachea's free end.

    With a hint: the end point nearest to it. Else, among ends where the scan
    cuts the airway, the widest; else the most cranial end point among those
    whose last centimetre is wide.
    """
    ends = graph.end_nodes() or list(graph.node_voxel)  # no end point at all: a closed loop, cut later
    positions = np.array([lps(np.array([graph.node_voxel[n]]))[0] for n in ends])
    if hint is not None:
        return ends[int(np.argmin(np.linalg.norm(positions - np.asarray(hint, float), axis=1)))]
    if face_ends:
        return max(face_ends, key=lambda n: _end_width(graph, n))
    widths = np.array([_end_width(graph, n) for n in ends])
    wide = widths >= 0.5 * widths.max()
    z = np.where(wide, positions[:, 2], -np.inf)
    return ends[int(np.argmax(z))]


def _end_width(graph: SkeletonGraph, node: int, reach_mm: float = 10.0) -> float:
    """Mean lumen radius over the last ``reach_mm`` of centerline before an end point.

    The trachea, cut by the top of the scan, stays wide up to its end; the
    ends of small branches and of wall spurs narrow to a voxel.
    """
    if not graph.incident[node]:
        return 0.0
    path = graph.oriented_path(graph.incident[node][0], node)
    steps = np.linalg.norm(np.diff(graph.coords[path], axis=0) * graph.spacing_kji, axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    return float(graph.radius[path[arc <= reach_mm]].mean())


def _smooth(points: np.ndarray) -> np.ndarray:
    """Three-point moving average (ends kept): removes the voxel staircase that inflates lengths."""
    if len(points) < 3:
        return points
    out = points.copy()
    out[1:-1] = (points[:-2] + points[1:-1] + points[2:]) / 3.0
    return out


def _orient(graph: SkeletonGraph, root: int, lps) -> list[Branch]:
    """Breadth-first from the root node: one Branch per edge, points proximal to distal."""
    branches: list[Branch] = []
    queue = [(graph.incident[root][0], root, None)]
    seen_edges: set[int] = set()
    while queue:
        eid, start, parent = queue.pop(0)
        if eid in seen_edges:
            continue
        seen_edges.add(eid)
        path = graph.oriented_path(eid, start)
        bid = len(branches)
        branches.append(Branch(bid, parent, [], 0, "", _smooth(lps(path)), graph.radius[path].astype(float)))
        if parent is not None:
            branches[parent].children.append(bid)
        end = graph.other_end(eid, start)
        for nxt in graph.incident[end]:
            if nxt not in seen_edges:
                queue.append((nxt, end, bid))
    return branches


def _fold_short_segments(branches: list[Branch]) -> list[Branch]:
    """Fold internal branches shorter than their own mean radius into the parent; renumber ids.

    Thinning draws a trifurcation as two bifurcations a voxel or two apart;
    counting that stub as a generation would shift every generation below it.
    """
    alive = {b.id: b for b in branches}
    for b in list(branches):
        if b.parent is None or not b.children or b.length_mm >= max(b.mean_radius_mm, 1e-6):
            continue
        parent = alive[b.parent]
        parent.points_lps = np.concatenate([parent.points_lps, b.points_lps[1:]])
        parent.radius_mm = np.concatenate([parent.radius_mm, b.radius_mm[1:]])
        parent.children = [c for c in parent.children if c != b.id] + b.children
        for c in b.children:
            alive[c].parent = parent.id
        del alive[b.id]
    new_id = {old: new for new, old in enumerate(sorted(alive))}
    out = []
    for old in sorted(alive):
        b = alive[old]
        b.id = new_id[old]
        b.parent = None if b.parent is None else new_id[b.parent]
        b.children = [new_id[c] for c in b.children]
        out.append(b)
    return out


# --- anatomy ------------------------------------------------------------------------------------------------
class _Anatomy:
    """Subtree sizes and directions used to name bronchi by geometry rather than child order."""

    def __init__(self, tree: AirwayTree) -> None:
        self.tree = tree
        n = len(tree.branches)
        self.size = np.zeros(n)  # centerline length of the subtree (mm)
        self.weighted = np.zeros((n, 3))  # sum of point * length, for the subtree centroid
        for b in reversed(tree.branches):  # children have larger ids than parents (BFS order)
            self.size[b.id] += b.length_mm
            self.weighted[b.id] += b.points_lps.mean(axis=0) * b.length_mm
            if b.parent is not None:
                self.size[b.parent] += self.size[b.id]
                self.weighted[b.parent] += self.weighted[b.id]

    def direction(self, bid: int) -> np.ndarray:
        """Unit vector from the branch's origin to its subtree's centroid."""
        b = self.tree.branches[bid]
        centroid = self.weighted[bid] / max(self.size[bid], 1e-9)
        v = centroid - b.points_lps[0]
        return v / max(np.linalg.norm(v), 1e-9)

    def walk(self, bid: int, frac: float = 0.1) -> tuple[list[int], list[int]]:
        """Follow ``bid`` past minor side branches to its first split into two or more major children."""
        path = [bid]
        while True:
            kids = self.tree.branches[path[-1]].children
            if not kids:
                return path, []
            total = sum(self.size[k] for k in kids)
            major = [k for k in kids if self.size[k] >= frac * total]
            if len(major) >= 2:
                return path, major
            path.append(max(kids, key=lambda k: self.size[k]))


def _name_tree(tree: AirwayTree) -> None:
    anatomy = _Anatomy(tree)
    branches = tree.branches

    def label(ids: list[int], name: str) -> None:
        for bid in ids:
            branches[bid].name = name

    trachea, major = anatomy.walk(0)
    label(trachea, TRACHEA)
    if len(major) < 2:
        return
    mains = sorted(major, key=lambda k: -anatomy.size[k])[:2]
    right, left = sorted(mains, key=lambda k: anatomy.direction(k)[0])  # patient's right = -x in LPS
    _name_right(anatomy, right, label)
    _name_left(anatomy, left, label)
    for name, lobe in LOBE_OF.items():
        top = tree.named(name)
        if top is None:
            continue
        stack = [top.id]
        while stack:
            b = branches[stack.pop()]
            b.lobe = lobe
            stack.extend(b.children)


def _name_right(anatomy: _Anatomy, right: int, label) -> None:
    path, major = anatomy.walk(right)
    label(path, RIGHT_MAIN)
    if len(major) < 2:
        return
    upper = max(major, key=lambda k: anatomy.direction(k)[2])  # cranial
    rest = [k for k in major if k != upper]
    intermedius = max(rest, key=lambda k: anatomy.size[k])
    label([upper], RIGHT_UPPER)
    # A third major child at the same split (upper, middle and lower from one point) is a middle-lobe candidate.
    extra = [k for k in rest if k != intermedius]
    bi_path = [intermedius]
    middle = lower = None
    for _ in range(4):
        kids = anatomy.tree.branches[bi_path[-1]].children + extra
        extra = []
        if not kids:
            break
        cont = max(kids, key=lambda k: anatomy.size[k])
        big = [k for k in kids if anatomy.size[k] >= 0.05 * anatomy.size[intermedius]]
        front = min(big, key=lambda k: anatomy.direction(k)[1])
        others = [k for k in big if k != front]
        # The middle lobe bronchus runs anteriorly (-y); the lower lobe bronchus caudally and posteriorly.
        if others and anatomy.direction(front)[1] < min(-0.3, *(anatomy.direction(k)[1] - 0.2 for k in others)):
            middle, lower = front, max(others, key=lambda k: anatomy.size[k])
            break
        bi_path.append(cont)
    if middle is None:  # no clearly anterior child: take the first split as-is
        bi_path = [intermedius]
        kids = anatomy.tree.branches[intermedius].children
        if len(kids) < 2:
            label(bi_path, INTERMEDIUS)
            return
        lower = max(kids, key=lambda k: anatomy.size[k])
        middle = min((k for k in kids if k != lower), key=lambda k: anatomy.direction(k)[1])
    label(bi_path, INTERMEDIUS)
    label([middle], RIGHT_MIDDLE)
    label([lower], RIGHT_LOWER)


def _name_left(anatomy: _Anatomy, left: int, label) -> None:
    path, major = anatomy.walk(left)
    label(path, LEFT_MAIN)
    if len(major) < 2:
        return
    upper = max(major, key=lambda k: anatomy.direction(k)[2] - anatomy.direction(k)[1])  # cranial and anterior
    lower = max((k for k in major if k != upper), key=lambda k: anatomy.size[k])
    label([upper], LEFT_UPPER)
    label([lower], LEFT_LOWER)


def _assign_generations(tree: AirwayTree) -> None:
    """0 = trachea; +1 per split, except along continuation pieces of one named bronchus."""
    for b in tree.branches:  # parents come first (BFS order)
        if b.parent is None:
            b.generation = 0
            continue
        parent = tree.branches[b.parent]
        same = bool(b.name) and b.name == parent.name
        b.generation = parent.generation + (0 if same else 1)
