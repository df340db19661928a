"""facelab.io."""
