"""facelab.bench."""
