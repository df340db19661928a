"""facelab.train."""
