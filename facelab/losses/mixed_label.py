"""The mixed-label loss of the SIR recipe: each term only on the rows that carry its label.

Book chapter: ``book/10_sir.ipynb``; the terms and their definitions are in
:mod:`facelab.train.sir`. A batch mixes landmark-only rows (2D landmarks, no identity) and
identity-only rows (an identity label, no landmarks).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facelab.checks import check_image_size
from facelab.losses.sir import SIR_MARGIN_MM, sir_loss_terms

#: Default weights of the four terms (facelab's choices; the recipe sets its own).
W_LANDMARK = 10.0
W_PRIOR = 0.01
W_RECOG = 1.0
W_SIR = 0.0
#: the 3D term is off unless a recipe asks for it: the SIR paper's rows carry 2D landmarks only
W_SHAPE = 0.0


class MixedLabelLoss(nn.Module):
    """The loss of the module docstring on a mixed batch; each term only on its rows.

    Args:
        image_size: ``(H, W)`` px (normalises the landmark term).
        w_landmark, w_prior, w_recog, w_sir: weights (0 switches a term off).
        sir_margin_mm: the SIR push margin, per-vertex RMS mm.
        w_shape: weight of the 3D term ``shape``: the mean per-vertex distance (mm) between the
            decoded identity shape and the row's labelled ``shape_identity``, on the rows with
            ``has_shape`` (300W-LP's fitted 3DMM shapes play this part on real data).
        return_terms: also return the weighted terms ``{"lmk", "prior", "recog", "sir", "shape"}``
            (for the trainer's term diagnostics).

    ``forward(model, batch) -> (loss, metrics)`` with ``model`` a
    :class:`~facelab.models.sir.SIRNet`. The batch holds ``image (B, 3, H, W)``, ``landmarks2d (B, 68, 2)`` px (any value on rows without landmarks), ``has_landmarks (B,)``
    bool and ``label (B,)`` long (``-1``: no identity label); with ``w_shape > 0`` also
    ``shape_identity (B, V, 3)`` mm and ``has_shape (B,)`` bool. Metrics: ``lmk`` (normalised),
    ``lmk_px``, ``prior``, ``recog``, ``acc`` (training identification accuracy of the
    margin-free scores), ``sir``, ``sir_pull``, ``sir_push`` (mm^2), ``shape`` (mm), each 0 when
    its rows are absent.

    >>> from facelab.models.sir import SIRNet, SIRNetConfig
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> net = SIRNet(SIRNetConfig(n_shape=6, n_exp=3, image_size=(32, 32), n_classes=2),
    ...              build_synthfaces(SynthFacesConfig(resolution="quick")))
    >>> batch = {"image": torch.rand(4, 3, 32, 32), "landmarks2d": torch.full((4, 68, 2), 16.0),
    ...          "has_landmarks": torch.tensor([True, True, False, False]), "label": torch.tensor([-1, -1, 0, 1])}
    >>> loss, metrics = MixedLabelLoss((32, 32))(net, batch)
    >>> loss.shape, sorted(metrics)[:3]
    (torch.Size([]), ['acc', 'lmk', 'lmk_px'])
    """

    def __init__(self, image_size, w_landmark: float = W_LANDMARK, w_prior: float = W_PRIOR, w_recog: float = W_RECOG,
                 w_sir: float = W_SIR, sir_margin_mm: float = SIR_MARGIN_MM, return_terms: bool = False,
                 w_shape: float = W_SHAPE) -> None:
        super().__init__()
        H, W = check_image_size(image_size)
        self.norm_px = math.sqrt(H * W)
        for name, value in (("w_landmark", w_landmark), ("w_prior", w_prior), ("w_recog", w_recog),
                            ("w_sir", w_sir), ("sir_margin_mm", sir_margin_mm), ("w_shape", w_shape)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be finite and >= 0, got {value}")
        self.w_landmark, self.w_prior, self.w_recog, self.w_sir = w_landmark, w_prior, w_recog, w_sir
        self.w_shape = w_shape
        self.return_terms = return_terms
        self.sir_margin_mm = sir_margin_mm

    def forward(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        for key in ("image", "landmarks2d", "has_landmarks", "label"):
            if key not in batch:
                raise KeyError(f"batch: a mixed-label batch needs {key!r}")
        out = model(batch["image"])
        zero = out["a_id"].new_zeros(())
        lp, ided = batch["has_landmarks"].bool(), batch["label"] >= 0
        terms = {k: zero for k in ("lmk", "lmk_px", "prior", "recog", "acc", "sir", "sir_pull", "sir_push", "shape")}
        if lp.any():
            sub = {k: v[lp] for k, v in out.items()}
            px = (model.landmarks2d(sub) - batch["landmarks2d"][lp]).norm(dim=-1).mean()
            terms["lmk_px"], terms["lmk"] = px, px / self.norm_px
            prior = sub["a_id"].pow(2).mean()
            if sub["a_exp"].numel():
                prior = prior + sub["a_exp"].pow(2).mean()
            terms["prior"] = prior
        if self.w_shape > 0:
            terms["shape"] = self._shape_term(model, out, batch)
        if ided.any():
            a, labels = out["a_id"][ided], batch["label"][ided]
            if self.w_recog > 0:
                terms["recog"] = model.head(a, labels)
                with torch.no_grad():
                    terms["acc"] = (model.head.predict(a) == labels).float().mean()
            if self.w_sir > 0:
                x, scale = model.geometry(a)
                pull, push = sir_loss_terms(x, labels, scale, self.sir_margin_mm, n_verts=model.n_verts)
                terms["sir_pull"], terms["sir_push"], terms["sir"] = pull, push, pull + push
        weighted = {"lmk": self.w_landmark * terms["lmk"], "prior": self.w_prior * terms["prior"],
                    "recog": self.w_recog * terms["recog"], "sir": self.w_sir * terms["sir"],
                    "shape": self.w_shape * terms["shape"]}
        if self.w_shape == 0:  # no zero column in the diagnostics of runs without the 3D term
            del weighted["shape"], terms["shape"]
        loss = sum(weighted.values())
        metrics = {k: v.detach() for k, v in terms.items()}
        if self.return_terms:  # for the trainer's term diagnostics (facelab.train.diagnostics)
            return loss, metrics, weighted
        return loss, metrics

    @staticmethod
    def _shape_term(model, out: dict, batch: dict) -> torch.Tensor:
        """Mean per-vertex distance (mm) between decoded and labelled identity shapes, on ``has_shape`` rows."""
        for key in ("shape_identity", "has_shape"):
            if key not in batch:
                raise KeyError(f"batch: w_shape > 0 needs {key!r} (the labelled rows' 3D identity shapes)")
        rows = batch["has_shape"].bool()
        if not rows.any():
            return out["a_id"].new_zeros(())
        decoded = model.decode_identity(out["a_id"][rows])
        truth = batch["shape_identity"][rows].to(decoded)
        if truth.shape != decoded.shape:
            raise ValueError(f"batch: shape_identity is {tuple(truth.shape)}, the network decodes {tuple(decoded.shape)}")
        return (decoded - truth).norm(dim=-1).mean()
