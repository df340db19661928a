"""Property-based tests: config parsers and public functions that take user data, fed wrong
shapes, dtypes, NaN/Inf, empty and degenerate inputs, end in ValueError / TypeError naming the
argument, or return finite values. Never an exception from deep inside torch / numpy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from hypothesis import example, HealthCheck, assume, given, settings, strategies as st

from facelab.config import apply_overrides
from facelab.data.align import align_faces
from facelab.metrics.reconstruction import nme_interocular, rmse
from facelab.metrics.verification import verify
from facelab.train.liu2018 import Liu2018TrainConfig
from facelab.train.trainer import TrainConfig

MAX_EXAMPLES = 40
CLEAR_ERRORS = (ValueError, TypeError)
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,  # same cases every run
                 suppress_health_check=[HealthCheck.too_slow])
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, 1e30, -1e-30]


@st.composite
def arrays(draw, shapes, dtypes=("float32", "float64", "int64", "bool"), special: bool = True):
    """A tensor of one of ``shapes`` (or a random wrong one), some dtype, maybe with NaN / Inf / huge values."""
    shape = draw(st.sampled_from(shapes) | st.lists(st.integers(0, 4), max_size=4).map(tuple))
    dtype = draw(st.sampled_from(dtypes))
    n = int(np.prod(shape)) if shape else 1
    x = torch.from_numpy(np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=n) * 50).reshape(shape)
    if special and n and x.is_floating_point() and draw(st.booleans()):
        x.view(-1)[draw(st.integers(0, n - 1))] = draw(st.sampled_from(SPECIAL))
    return x.to(getattr(torch, dtype))


def names_an_argument(err: Exception, names) -> bool:
    return any(name in str(err) for name in names)


def finite(x) -> bool:
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x).all())
    return bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64))))


# ----------------------------------------------------------------- configs
KEYS = [f.name for f in dataclasses.fields(TrainConfig)] + ["nope", "", "steps ", "=x"]
VALUES = st.sampled_from(["0", "-1", "1e309", "nan", "inf", "", "true", "[1,2]", "3", "0.5", "quick", "huge", "1,2,3",
                          "None", "{}", "\x00"]) | st.text(max_size=6)


@FUZZ
@given(items=st.lists(st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
                      | st.text(max_size=8).map(lambda t: [t]), max_size=3))
def test_train_config_overrides(items):
    try:
        cfg = apply_overrides(TrainConfig(), items)
    except CLEAR_ERRORS as err:
        assert "--set" in str(err) or names_an_argument(err, KEYS), f"{type(err).__name__}: {err}"
        return
    assert cfg.steps >= 1 and cfg.batch_size >= 1 and cfg.lr > 0 and math.isfinite(cfg.lr)
    assert cfg.weight_decay >= 0 and cfg.grad_clip >= 0 and cfg.log_every >= 1 and cfg.ckpt_every >= 1


LIU_KEYS = ["image_size", "render_size", "phase_steps", "phase_lr", "stages", "lambda_r", "batch_size",
            "train.batch_size", "train.lr", "embedding_dim", "margin_m", "pool", "loss", "targets"]


@FUZZ
@given(key=st.sampled_from(LIU_KEYS), value=VALUES | st.sampled_from(["0,0", "-4,8", "1,2,3", "8", "1e9,1e9"]))
@example(key="lambda_r", value="1e309")  # found by hypothesis: overflowed to inf and was accepted
def test_liu2018_config_overrides(key, value):
    try:
        cfg = apply_overrides(Liu2018TrainConfig(), [f"{key}={value}"])
    except CLEAR_ERRORS as err:
        names = [key, "--set"]
        assert names_an_argument(err, names), f"{type(err).__name__}: {err}"
        return
    assert all(s >= 1 for s in cfg.phase_steps) and all(lr > 0 and math.isfinite(lr) for lr in cfg.phase_lr)
    assert all(s >= 1 for s in cfg.image_size) and cfg.train.batch_size >= 1 and cfg.embedding_dim >= 1
    assert cfg.train.lr is None  # each phase's rate is phase_lr
    assert cfg.lambda_r >= 0 and math.isfinite(cfg.lambda_r)


# ----------------------------------------------------------------- metrics
@FUZZ
@given(emb1=arrays([(8, 4)]), emb2=arrays([(8, 4)]), issame=arrays([(8,)], ("bool", "int64", "float32")),
       n_folds=st.sampled_from([2, 0, -1, 9]))
def test_verify_inputs(emb1, emb2, issame, n_folds):
    try:
        res = verify(emb1, emb2, issame, n_folds=n_folds)
    except CLEAR_ERRORS as err:
        assert names_an_argument(err, ["emb1", "emb2", "issame", "n_folds", "fold"]), f"{type(err).__name__}: {err}"
        return
    assert 0 <= res.accuracy_mean <= 1


@FUZZ
@given(pred=arrays([(2, 6, 3), (6, 3)]), gt=arrays([(2, 6, 3), (6, 3)]))
def test_rmse_inputs(pred, gt):
    try:
        out = rmse(pred, gt)
    except CLEAR_ERRORS as err:
        assert names_an_argument(err, ["pred", "gt", "mask"]), f"{type(err).__name__}: {err}"
        return
    assert finite(out)


@FUZZ
@given(pred=arrays([(2, 68, 2), (68, 2), (2, 68, 3)]), gt=arrays([(2, 68, 2), (68, 2), (2, 68, 3)]))
def test_nme_inputs(pred, gt):
    try:
        out = nme_interocular(pred, gt)
    except CLEAR_ERRORS as err:
        assert names_an_argument(err, ["pred", "gt", "outer_eye"]), f"{type(err).__name__}: {err}"
        return
    assert finite(out)


# ------------------------------------------------------------- alignment
@FUZZ
@given(images=arrays([(1, 3, 16, 16)], ("float32",)), lm=arrays([(1, 68, 2)], ("float32", "int64")),
       collapse=st.booleans(), out_size=st.sampled_from([(8, 8), (0, 8), (8,), None]))
def test_align_faces_inputs(images, lm, collapse, out_size):
    if collapse and lm.shape == (1, 68, 2):
        lm = torch.full_like(lm, 5)  # every landmark on one point: no similarity maps it to the template
    try:
        crops, lm_out = align_faces(images, lm, out_size)
    except CLEAR_ERRORS as err:
        assert names_an_argument(err, ["images", "landmarks2d", "out_size", "image_size"]), f"{type(err).__name__}: {err}"
        return
    assume(torch.isfinite(images).all())
    assert finite(crops) and finite(lm_out)
