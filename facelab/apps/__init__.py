"""facelab.apps: what disentangled codes are good for.

* :func:`~facelab.apps.transfer.expression_transfer`: keep A's identity, take B's
  expression, pose and light (Gao et al. 2020, section 5.3);
* :func:`~facelab.apps.transfer.blend_transfer`: the same with a blended expression;
* :func:`~facelab.apps.transfer.transfer_widget`: the ipywidgets demo.

Book chapter: ``book/11_applications.ipynb``.
"""

from facelab.apps.transfer import blend_transfer, expression_transfer, transfer_widget

__all__ = ["blend_transfer", "expression_transfer", "transfer_widget"]
