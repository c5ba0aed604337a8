"""Synthetic chest CT phantoms with exact ground truth (airway, lungs, vessels, nodules).

``generate_chest(seed, ...)`` builds a whole patient; ``generate_chest_from_airway``
builds the same synthetic CT around a real airway mask, which becomes the ground truth.
"""

from .airway_tree import LOBAR_NAMES, Branch
from .chest import PRESETS, ChestPhantom, generate_chest
from .from_mask import generate_chest_from_airway
from .nodules import Distractor, NoduleSpec

__all__ = ["LOBAR_NAMES", "PRESETS", "Branch", "ChestPhantom", "Distractor", "NoduleSpec", "generate_chest",
           "generate_chest_from_airway"]
