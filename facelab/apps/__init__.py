"""facelab.apps: what disentangled codes are good for.

* :func:`~facelab.apps.transfer.expression_transfer`: keep A's identity, take B's
  expression, pose and light (Gao et al. 2020, section 5.3);
* :func:`~facelab.apps.transfer.blend_transfer`: the same with a blended expression;
* :func:`~facelab.apps.transfer.transfer_widget`: the ipywidgets demo;
* :func:`~facelab.apps.photo.reconstruct_photo` and :func:`~facelab.apps.photo.write_photo`:
  the reader's own photo to a 3D face (``facelab photo``; needs the ``facelab[photo]`` extra);
* :func:`~facelab.apps.landmarks.landmark_folder`: the ``landmarks.json`` sidecar of a folder of
  photos (``facelab landmarks ROOT``; the same extra).

Book chapters: ``book/11_applications.ipynb``; ``book/12_real_data.ipynb`` ("Your own photo").
"""

from facelab.apps.landmarks import landmark_folder
from facelab.apps.photo import photo_summary, reconstruct_photo, write_photo
from facelab.apps.transfer import blend_transfer, expression_transfer, transfer_widget

__all__ = ["blend_transfer", "expression_transfer", "transfer_widget", "photo_summary", "reconstruct_photo", "write_photo",
           "landmark_folder"]
