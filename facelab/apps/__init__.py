"""facelab.apps: what disentangled codes are good for.

* :func:`~facelab.apps.transfer.expression_transfer`: keep A's identity, take B's
  expression, pose and light (Gao et al. 2020, section 5.3).

Book chapter: ``book/11_applications.ipynb``.
"""

from facelab.apps.transfer import expression_transfer

__all__ = ["expression_transfer"]
