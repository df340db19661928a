"""facelab.camera."""
