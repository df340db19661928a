"""How much of each person's albedo a model recovers, up to the light's scale.

A photo fixes only the product of albedo and light: a darker skin under a brighter light
makes the same pixels. So a decoded albedo is compared with the truth in two ways that
this ambiguity cannot fake:

* **tone**: across photos, does a darker person get a darker albedo? The Pearson
  correlation between the decoded and the true face-mean luminance (mean over the face
  vertices and the three channels). A decoder that returns the same albedo for everyone
  scores about 0 (its tiny wobbles correlate with nothing); one that follows the truth, 1.
* **pattern**: the RMSE after a per-photo, per-channel gain fitted to the truth by least
  squares (the light's colour and strength absorbed), beside the same for the
  population-mean albedo of the photos. Below the mean's, the decoder recovers who has
  darker brows, lips or stubble, not only the tone.

``spread`` (the per-vertex standard deviation across photos, averaged) says whether the
decoder varies its output at all.

Book chapter: ``book/11_applications.ipynb``.
"""

from __future__ import annotations

import numpy as np

from facelab.metrics._common import as_float_array, as_mask

__all__ = ["albedo_agreement"]

#: below this many photos a correlation across photos means little
MIN_PHOTOS = 3


def _gained(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``x`` times the per-photo, per-channel gain that best fits ``truth`` (least squares)."""
    denom = (x * x).sum(1, keepdims=True)
    gain = np.divide((x * truth).sum(1, keepdims=True), denom, out=np.ones_like(denom), where=denom > 0)
    return x * gain


def albedo_agreement(pred, truth, mask=None) -> dict:
    """Tone and pattern agreement of decoded albedos with the true ones (module docstring).

    Args:
        pred, truth: ``(N, V, 3)`` float, linear RGB in [0, 1], one row per photo, in the
            same vertex order (N >= 3 photos).
        mask: optional ``(V,)`` bool or vertex indices (e.g. the model's ``face_mask``):
            the vertices compared.

    Returns:
        ``{"tone_corr", "rmse", "rmse_gained", "mean_albedo_rmse_gained", "spread",
        "n_photos"}``: the luminance correlation across photos (NaN when either side is
        constant), the plain RMSE, the RMSE after the per-photo gain, the population-mean
        albedo's RMSE after its own gain, and the mean per-vertex std across photos.

    >>> rng = np.random.default_rng(0)
    >>> truth = rng.uniform(0.2, 0.8, (5, 4, 3))
    >>> out = albedo_agreement(0.5 * truth, truth)  # right up to the light's scale
    >>> round(out["tone_corr"], 6), round(out["rmse_gained"], 9), round(out["rmse"], 3) > 0
    (1.0, 0.0, True)
    """
    p = as_float_array(pred, "pred", ("N", "V", 3))
    t = as_float_array(truth, "truth", p.shape)
    if p.shape[0] < MIN_PHOTOS:
        raise ValueError(f"pred: need at least {MIN_PHOTOS} photos to correlate tones across them, got {p.shape[0]}")
    if mask is not None:
        idx = as_mask(mask, "mask", p.shape[1])
        p, t = p[:, idx], t[:, idx]
    tone_p, tone_t = p.mean((1, 2)), t.mean((1, 2))
    constant = np.ptp(tone_p) == 0 or np.ptp(tone_t) == 0
    population = np.broadcast_to(t.mean(0, keepdims=True), t.shape)
    rms = lambda d: float(np.sqrt((d ** 2).mean()))  # noqa: E731
    return {"tone_corr": float("nan") if constant else float(np.corrcoef(tone_p, tone_t)[0, 1]),
            "rmse": rms(p - t), "rmse_gained": rms(_gained(p, t) - t),
            "mean_albedo_rmse_gained": rms(_gained(population, t) - t),
            "spread": float(p.std(0).mean()), "n_photos": int(p.shape[0])}
