"""facelab.models."""
