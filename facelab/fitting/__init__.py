"""facelab.fitting."""
