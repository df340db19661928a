"""`reproduce_gao2020` end to end on tiny sizes: both tables, consistency, heat maps, reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facelab.reproduce.gao2020 import VARIANT_LABELS, identity_consistency, reproduce_gao2020

TINY_TRAIN = ["train.image_size=32,32", "train.lp_identities=4", "train.lp_images_per_identity=4",
              "train.col_identities=4", "train.col_images_per_identity=4", "train.batch_lp=4", "train.batch_col=4",
              "train.steps=2,1", "train.warmup_steps=2", "train.batch_warmup=4", "train.progress=false", "train.cache_pool=false", "train.log_every=1",
              "train.ckpt_every=1"]
TINY_EVAL = ["eval.micc_identities=2", "eval.icp_iters=3"]


@pytest.mark.slow
def test_tiny_reproduce_writes_both_tables(tmp_path):
    out = tmp_path / "run"
    result = reproduce_gao2020("quick", out, TINY_TRAIN + TINY_EVAL, variants=("full", "no_recog"),
                               with_baseline=False)
    conds = {"cooperative", "indoor", "outdoor"}
    for row in ("average_over_identity", "three_view"):
        cells = result["table1"][row]["Ours (Gao et al. 2020, full)"]
        assert set(cells) == conds and all(np.isfinite(c["mean"]) and c["std"] >= 0 for c in cells.values())
    assert set(result["table2"]) == {VARIANT_LABELS["full"], VARIANT_LABELS["no_recog"]}
    assert result["identity_consistency"][VARIANT_LABELS["full"]]["within_mm"] >= 0
    heat = np.asarray(result["heat_maps"][VARIANT_LABELS["full"]]["errors_mm"])
    assert heat.ndim == 1 and (heat >= 0).all()
    saved = json.loads((out / "results.json").read_text())
    assert saved["table2"] == json.loads(json.dumps(result["table2"]))
    assert "Table 2" in (out / "results.md").read_text()
    # a second call reuses the trained variants (same checkpoints, same scores)
    again = reproduce_gao2020("quick", out, TINY_TRAIN + TINY_EVAL, variants=("full", "no_recog"),
                              with_baseline=False)
    assert again["table2"] == result["table2"]


@pytest.mark.slow
def test_heldout_rescore_copies_scores_on_another_suite_and_leaves_the_run(tmp_path):
    from facelab.reproduce.gao2020 import HELDOUT_JSON, rescore_heldout

    run, held = tmp_path / "run", tmp_path / "held"
    scored = reproduce_gao2020("quick", run, TINY_TRAIN + TINY_EVAL, variants=("full", "no_recog"), with_baseline=False)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    result = rescore_heldout(run, held, profile="quick", seeds=(0,), variants=("full", "no_recog"), overrides=TINY_EVAL)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before  # nothing in the run changed
    assert result["eval_seed"] == 1 and json.loads((held / HELDOUT_JSON).read_text())["eval_seed"] == 1
    claims, default = ({c["id"]: c for c in r["claims"]} for r in (result, scored))
    assert {"G1", "G1a", "G1b"} <= set(claims)
    assert claims["G1"]["active"] == default["G1"]["active"]  # the same summaries: the same activity
    assert claims["G1"]["estimate"] != default["G1"]["estimate"]  # other MICC subjects
    same = rescore_heldout(run, tmp_path / "again", profile="quick", eval_seed=0, seeds=(0,), variants=("full", "no_recog"),
                           overrides=TINY_EVAL)  # the default suite again: the run's own scores
    assert {c["id"]: c["estimate"] for c in same["claims"]} == {k: c["estimate"] for k, c in default.items() if k in claims}
    with pytest.raises(FileNotFoundError, match="no_adv"):
        rescore_heldout(run, tmp_path / "bad", profile="quick", seeds=(0,), variants=("full", "no_adv"))


def test_variants_must_include_full(tmp_path):
    with pytest.raises(ValueError, match="variants: must include 'full'"):
        reproduce_gao2020("quick", tmp_path, variants=("no_adv",))
    with pytest.raises(ValueError, match="variants"):
        reproduce_gao2020("quick", tmp_path, variants=("full", "bogus"))


def test_identity_consistency_hand_example():
    # one subject, one video, three frames k*x (k = 1, 2, 3) of a fixed 4-vertex shape x, truth x
    x = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    gt = x.expand(3, -1, -1).clone()
    pred = torch.stack([x, 2 * x, 3 * x])
    out = identity_consistency({"identity_shape": pred, "gt_identity": gt, "label": torch.zeros(3),
                                "condition": torch.zeros(3)}, np.ones(4, bool))
    # rigid (no scale) alignment of k*x onto x leaves every vertex (k-1) away: RMSE k-1, mean 1
    assert out["mean_mm"] == pytest.approx(1.0)
    # the video's mean shape is 2x: frames lie (k-2)*|x| = 1, 0, 1 mm away on every vertex: RMS sqrt(2/3)
    assert out["within_mm"] == pytest.approx(np.sqrt(2 / 3)) and out["between_mm"] == pytest.approx(0.0)


def test_identity_spread_does_not_reward_one_face_for_everyone():
    """Shrinking every prediction towards one face (a model that has collapsed) shrinks the raw spread of
    its identity shape across a video, but not its ratio to the spread between people."""
    from facelab.reproduce.gao2020 import frame_units, identity_spread
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    g = torch.Generator().manual_seed(0)
    n_subjects, n_frames = 6, 5
    truth = mm.mean_shape + (mm.shape_basis @ torch.randn(mm.n_shape, n_subjects, generator=g) * 20).T.reshape(
        n_subjects, -1, 3)
    labels = torch.arange(n_subjects).repeat_interleave(n_frames)
    jitter = torch.randn(n_subjects * n_frames, mm.n_verts, 3, generator=g)
    honest = truth[labels] + 0.5 * jitter  # right people, 0.5 mm of frame-to-frame noise
    collapsed = mm.mean_shape + 0.05 * (honest - mm.mean_shape)  # the same model, shrunk 20x towards the mean
    mask = mm.face_mask.numpy()
    ratios = {}
    for name, shapes in (("honest", honest), ("collapsed", collapsed)):
        pred = {"identity_shape": shapes, "gt_identity": truth[labels], "label": labels,
                "condition": torch.zeros(len(labels))}
        within, between = identity_spread(pred, mask)
        # independent check: numpy per subject, one video each
        s = shapes.double().numpy()[:, mask]
        ref = [np.sqrt(((s[labels == k] - s[labels == k].mean(0)) ** 2).sum(-1).mean()) for k in range(n_subjects)]
        np.testing.assert_allclose(within, ref, rtol=1e-9)
        ratios[name] = within.mean() / between
        if name == "collapsed":
            assert within.mean() < 0.05  # the raw spread alone would call the collapse 20x more consistent
        assert np.allclose(frame_units({**pred, "shape": shapes, "gt_shape": truth[labels],
                                        "yaw_deg": torch.full((len(labels),), 45.0)}, mm)["frame_spread_ratio"],
                           within / between)
    assert ratios["collapsed"] == pytest.approx(ratios["honest"], rel=1e-4)


def test_gao_claims_and_activity():
    """A recognition loss that never pulled makes G1 `inactive`; a real baseline gap is `reversed`."""
    from facelab.reproduce.gao2020 import gao_activity, gao_claims

    rng = np.random.default_rng(1)
    base = rng.normal(1.0, 0.2, size=10)
    units = {"full": {"micc_mm": base}, "no_recog": {"micc_mm": base + 0.3}, "no_adv": {"micc_mm": base + rng.normal(0, 0.02, 10)},
             "liu2018": {"micc_mm": base - 0.25}}
    share = lambda fraction: {"active_fraction": fraction}  # noqa: E731
    lazy = {"Full model": {"step1": {"steps": 100, "terms": {"recog": {"encoder": share(1.0)}, "adv": {"shape_decoder": share(0.9)},
                                                             "smooth": {"shape_decoder": share(0.3)}},
                                     "accuracy": {"active_fraction": 0.1}}}}
    activity = gao_activity(lazy)
    assert activity == {"recog": False, "adv": True, "smooth": False}  # the head stayed at chance
    # the stages pool by their steps: a short stage below the threshold does not undo a long one above it
    lazy["Full model"]["warmup"] = {"steps": 900, "terms": {"smooth": {"shape_decoder": share(0.9)}}}
    assert gao_activity(lazy)["smooth"] and not gao_activity(lazy)["adv"]  # adv: (900 * 0 + 100 * 0.9) / 1000
    claims = {c["id"]: c for c in gao_claims(units, {"landmark_fit": {"micc_mm": base - 0.3}}, activity, n_boot=500)}
    assert claims["G1"]["verdict"] == "inactive" and claims["G2"]["verdict"] == "within noise"
    assert claims["G4"]["verdict"] == "reversed" and claims["T1"]["verdict"] == "reversed"
    assert "G3" not in claims  # the Laplacian variant was not run


def test_frame_units_are_zero_for_the_truth_and_see_each_effect():
    """Per-subject frame scores: exact on the truth, and each moves with the error it measures."""
    from facelab.morphable import SynthFacesConfig, build_synthfaces
    from facelab.reproduce.gao2020 import HARD_YAW_DEG, frame_units

    mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    n_frames, rng = 4, torch.Generator().manual_seed(0)
    ids = mm.mean_shape + (mm.shape_basis @ torch.randn(mm.n_shape, 2, generator=rng) * 20).T.reshape(2, -1, 3)
    gt_identity = ids.repeat_interleave(n_frames, 0)  # subjects 0 and 1, one video of four frames each
    expression = torch.zeros_like(gt_identity)
    expression[[1, 5]] = 2.0  # one expressive frame per subject
    pred = {"identity_shape": gt_identity.clone(), "gt_identity": gt_identity, "shape": gt_identity + expression,
            "gt_shape": gt_identity + expression, "label": torch.arange(2).repeat_interleave(n_frames),
            "condition": torch.zeros(2 * n_frames), "yaw_deg": torch.tensor([0.0, 0, HARD_YAW_DEG, 0] * 2)}
    exact = frame_units(pred, mm)
    assert set(exact) == {"frame_mm", "frame_spread_mm", "frame_spread_ratio", "hard_frame_mm", "span_mm",
                          "detail_curvature_mm"}
    for name, value in exact.items():
        assert value.shape == (2,) and np.allclose(value, 0.0, atol=1e-4), name  # float32 shapes of ~100 mm
    # subject 1's identity off by 1 mm along z on every vertex of frame 4, and a bump off the span
    noisy = {**pred, "identity_shape": pred["identity_shape"].clone()}
    noisy["identity_shape"][4, :, 2] += torch.linspace(-1, 1, mm.n_verts) ** 2
    scores = frame_units(noisy, mm)
    assert scores["frame_mm"][0] == pytest.approx(0.0, abs=1e-6) and scores["frame_mm"][1] > 0
    assert scores["frame_spread_mm"][1] > 0 and scores["frame_spread_ratio"][1] > 0 and scores["span_mm"][1] > 0 and scores["span_mm"][0] < 1e-3
    # the hard frames are the turned (frame 2) and expressive (frame 1) ones: a shape error elsewhere is not seen
    off = {**pred, "shape": pred["shape"].clone()}
    off["shape"][0, :, 0] += torch.linspace(0, 3, mm.n_verts)
    assert frame_units(off, mm)["hard_frame_mm"][0] == pytest.approx(0.0, abs=1e-6)
    off["shape"][2, :, 0] += torch.linspace(0, 3, mm.n_verts)
    assert frame_units(off, mm)["hard_frame_mm"][0] > 0


@pytest.mark.slow
def test_tiny_reproduce_with_seeds_and_unshared_warmups(tmp_path):
    out = tmp_path / "run"
    result = reproduce_gao2020("quick", out, TINY_TRAIN + TINY_EVAL + ["train.share_warmup=false"],
                               variants=("full", "no_adv"), with_baseline=False, seeds=(0, 3))
    assert result["seeds"] == [0, 3]
    for run in (out, out / "seed3"):
        for variant in ("full", "no_adv"):
            assert (run / variant / "step2.pt").exists() and (run / variant / "warmup").is_dir()  # its own warm-up
    claims = {c["id"]: c for c in result["claims"]}
    assert {"G2", "G2a", "G2b", "G5"} <= set(claims) and claims["G2a"]["n_seeds"] == 2 and claims["G2a"]["n_subjects"] == 2
    assert claims["G5"]["rows"] == ["full", "full, identity code alone"] and claims["G5"]["active"]
    # every seed's per-subject scores are kept, seed-major, and average to the pooled table
    full, no_adv = (np.asarray(result["units"][VARIANT_LABELS[v]]["micc_mm"]) for v in ("full", "no_adv"))
    assert full.shape == no_adv.shape == (2, 2)  # (seeds, subjects)
    assert claims["G2"]["metric"] == "micc_mm" and np.isclose(claims["G2"]["estimate"], (full - no_adv).mean(), atol=1e-6)  # stored to 6 places
    assert result["shared_warmup"] == {"shared": False, "warmup_steps": 2, "own_steps": 3, "fraction": 0.0}
    warm = torch.load(out / "full" / "warmup.pt", weights_only=False)
    other = torch.load(out / "seed3" / "full" / "warmup.pt", weights_only=False)
    assert not torch.equal(warm["state_dict"]["shape_decoder.head.weight"], other["state_dict"]["shape_decoder.head.weight"])
    with pytest.raises(ValueError, match="seeds"):
        reproduce_gao2020("quick", out, TINY_TRAIN, seeds=())


def test_describe_pilot_hand_example_and_bad_input():
    from facelab.reproduce.gao2020 import describe_pilot

    scores = {"models": {"a": {"heldout_rmse_mm": 2.0, "heldout_mean_face_rmse_mm": 4.0,
                               "units": {"micc_mm": [0.5, 0.7, 0.9]}}}}
    # held-out 2/4 = 0.50; MICC mean 0.7 mm over a 1.4 mm mean face = 0.50
    assert describe_pilot("a", scores, 1.4) == \
        "a: held-out error 0.50 x the mean face's, MICC 0.700 mm (0.50 x the mean face's)"
    with pytest.raises(KeyError, match="name: no scored model 'b'"):
        describe_pilot("b", scores, 1.4)
    with pytest.raises(ValueError, match="mean_face_micc_mm"):
        describe_pilot("a", scores, 0.0)


def test_activity_fractions_pool_stages_and_take_the_head_for_recognition():
    from facelab.reproduce.gao2020 import activity_fractions, gao_activity

    def stage(steps, share, head):
        return {"steps": steps, "accuracy": {"active_fraction": head},
                "terms": {"recog": {"encoder": {"active_fraction": share}},
                          "smooth": {"shape_decoder": {"active_fraction": share}}}}

    # step 1: 800 steps, head at 5 x chance in half of them; step 2: 200 steps, always
    diag = {"Full model": {"step1": stage(800, 1.0, 0.5), "step2": stage(200, 0.25, 1.0)}}
    got = activity_fractions(diag)
    # share (800 * 1.0 + 200 * 0.25) / 1000 = 0.85; head (800 * 0.5 + 200) / 1000 = 0.6; recognition: the smaller
    assert got == pytest.approx({"recog": 0.6, "adv": 0.0, "smooth": 0.85})
    assert gao_activity(diag) == {"recog": False, "adv": False, "smooth": True}
    assert activity_fractions({}) == {"recog": 0.0, "adv": 0.0, "smooth": 0.0}
