"""facelab.viz."""
