"""facelab.losses."""
