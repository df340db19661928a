"""facelab.render."""
