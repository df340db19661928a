"""Morphable face models: the :class:`MorphableModel` container and the SynthFaces world."""

from facelab.morphable.model import MorphableModel, load_npz

__all__ = ["MorphableModel", "load_npz"]
