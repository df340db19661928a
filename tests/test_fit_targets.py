"""Tests of facelab.fitting.targets and ``facelab fit SUITE_OR_DIR``: fitted training targets per image."""

import json
import re

import numpy as np
import pytest
import torch

from facelab.data import SavedCollection, make_suite, save_collection
from facelab.fitting import (
    CollectionFitConfig,
    fit_collection,
    fit_photometric,
    identity_rmse,
    load_fitted_targets,
    save_fitted_targets,
)

TINY = dict(n_identities=2, images_per_identity=2, image_size=32, resolution="quick")


@pytest.fixture(scope="module")
def suite():
    return make_suite("webface", **TINY)


@pytest.fixture(scope="module")
def fitted(suite, tmp_path_factory):
    """``(targets, report, path)`` of a 2-step multi-image fit of the tiny suite."""
    targets, report = fit_collection(suite, CollectionFitConfig(n_steps=2))
    path = save_fitted_targets(tmp_path_factory.mktemp("fit") / "targets.npz", targets)
    return targets, report, path


@pytest.fixture(scope="module")
def saved(suite, tmp_path_factory):
    """The tiny suite written to a folder, as ``facelab synth`` does."""
    return save_collection(suite, tmp_path_factory.mktemp("synth") / "webface", progress=False)


def _rewrite(path, out, **changes):
    """Copy targets file ``path`` to ``out`` with some arrays replaced."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(out, **arrays)
    return out


# ------------------------------------------------------------------ smoke + shapes
def test_round_trip_shapes_and_shared_identity(suite, fitted):
    targets, _, path = fitted
    t = load_fitted_targets(path, suite)
    m, N = suite.model, len(suite)
    assert sorted(t) == ["alpha_exp", "alpha_id", "shape", "shape_identity"]
    assert t["alpha_id"].shape == (N, m.n_shape) and t["alpha_exp"].shape == (N, m.n_exp)
    assert t["shape_identity"].shape == (N, m.n_verts, 3) and t["shape"].shape == (N, m.n_verts, 3)
    # images are subject-major (labels 0, 0, 1, 1): each row is its subject's fitted identity
    labels = suite.table.label
    torch.testing.assert_close(t["alpha_id"], targets["alpha_id"][labels], rtol=0, atol=0)
    torch.testing.assert_close(t["alpha_exp"], targets["alpha_exp"], rtol=0, atol=0)
    assert not torch.equal(t["alpha_id"][0], t["alpha_id"][2])
    torch.testing.assert_close(t["shape_identity"][0], t["shape_identity"][1], rtol=0, atol=0)


# ------------------------------------------------------------------ numerical values
def test_shapes_equal_independent_basis_sum(suite, fitted):
    _, _, path = fitted
    t = load_fitted_targets(path, suite)
    m = suite.model
    with np.load(path) as z:
        alpha_g, alpha_exp, labels = z["alpha_id"], z["alpha_exp"], z["labels"]
    # numpy in float64, from the raw basis matrices: mean + U_id alpha_id (+ U_exp alpha_exp)
    mean = m.mean_shape.double().numpy().reshape(-1)
    ident = mean + alpha_g[labels].astype(np.float64) @ m.shape_basis.double().numpy().T
    full = ident + alpha_exp.astype(np.float64) @ m.exp_basis.double().numpy().T
    N = len(suite)
    np.testing.assert_allclose(t["shape_identity"].double().numpy().reshape(N, -1), ident, atol=1e-3, rtol=0)
    np.testing.assert_allclose(t["shape"].double().numpy().reshape(N, -1), full, atol=1e-3, rtol=0)


def test_report_rmse_matches_loaded_targets(suite, fitted):
    _, report, path = fitted
    t = load_fitted_targets(path, suite)
    first = torch.tensor([0, 2])  # one image per subject
    truth = suite.identities(suite.table.identity[first])["shape"]
    expected = identity_rmse(t["shape_identity"][first], truth, suite.model.face_mask).mean()
    assert report["identity_rmse_mm"] == pytest.approx(float(expected), rel=1e-4)
    assert report["n_images"] == 4 and report["n_identities"] == 2
    assert report["images_per_identity"] == {"min": 2, "mean": 2.0, "max": 2}


def test_fewer_components_are_zero_padded(suite, fitted, tmp_path):
    targets, _, path = fitted
    with np.load(path) as z:
        k_id, k_exp = 40, 10
        short = _rewrite(path, tmp_path / "short.npz", alpha_id=z["alpha_id"][:, :k_id], alpha_exp=z["alpha_exp"][:, :k_exp])
    t = load_fitted_targets(short, suite)
    assert t["alpha_id"].shape[1] == suite.model.n_shape and (t["alpha_id"][:, k_id:] == 0).all()
    assert t["alpha_exp"].shape[1] == suite.model.n_exp and (t["alpha_exp"][:, k_exp:] == 0).all()
    torch.testing.assert_close(t["alpha_exp"][:, :k_exp], targets["alpha_exp"][:, :k_exp], rtol=0, atol=0)


def test_scattered_labels_keep_collection_order():
    """lfw-style tables interleave identities; targets must still follow the image order."""
    lfw = make_suite("lfw", n_identities=4, n_folds=2, pairs_per_fold=2, image_size=32, resolution="quick")
    labels = lfw.table.label
    targets, _ = fit_collection(lfw, CollectionFitConfig(n_steps=1, batch_identities=2))
    assert torch.equal(targets["labels"], labels)
    # reference: one joint fit of all images in collection order (fits are per image, independent of the batch)
    b = lfw.batch(torch.arange(len(lfw)))
    ref = fit_photometric(lfw.model, b["image"], b["landmarks2d"], labels, masks=b["occlusion_mask"],
                          n_steps=1, n_shape=40, n_albedo=20)
    torch.testing.assert_close(targets["alpha_exp"], ref.alpha_exp, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(targets["pose"], ref.pose, atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------ belongs to the collection
def test_saved_folder_matches_generated_suite(suite, fitted, saved):
    _, _, path = fitted
    a = load_fitted_targets(path, suite)
    b = load_fitted_targets(path, SavedCollection(saved))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_other_image_size_is_accepted(fitted):
    _, _, path = fitted
    bigger = make_suite("webface", **{**TINY, "image_size": 48})
    assert load_fitted_targets(path, bigger)["shape"].shape[0] == 4


@pytest.mark.parametrize("other, match", [
    (dict(TINY, n_identities=3), "fitted to 4 images.*has 6"),
    (dict(TINY, n_identities=1, images_per_identity=4), "labels differ"),
    (dict(TINY, seed=1), "seed: 0 in the file, 1 in the collection"),
])
def test_mismatched_collection_raises(fitted, other, match):
    _, _, path = fitted
    with pytest.raises(ValueError, match=match) as err:
        load_fitted_targets(path, make_suite("webface", **other))
    assert str(path) in str(err.value)


def test_other_suite_raises(fitted):
    _, _, path = fitted
    with pytest.raises(ValueError, match="identity differ"):
        load_fitted_targets(path, make_suite("collections", **TINY))


def test_more_components_than_model_raises(suite, fitted, tmp_path):
    _, _, path = fitted
    with np.load(path) as z:
        wide = _rewrite(path, tmp_path / "wide.npz", alpha_id=np.zeros((2, suite.model.n_shape + 1), np.float32))
    with pytest.raises(ValueError, match="alpha_id has .* components"):
        load_fitted_targets(wide, suite)


# ------------------------------------------------------------------ bad input
def test_missing_and_corrupt_files_raise(suite, fitted, tmp_path):
    _, _, path = fitted
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_fitted_targets(tmp_path / "nope.npz", suite)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz: corrupt"):
        load_fitted_targets(truncated, suite)
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz: corrupt"):
        load_fitted_targets(text, suite)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "alpha_exp"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match="partial.npz: corrupt.*alpha_exp"):
        load_fitted_targets(tmp_path / "partial.npz", suite)
    other = _rewrite(path, tmp_path / "other.npz", format=np.array("something-else"))
    with pytest.raises(ValueError, match="other.npz: format"):
        load_fitted_targets(other, suite)
    short_rows = _rewrite(path, tmp_path / "rows.npz", sh=np.zeros((3, 27)))
    with pytest.raises(ValueError, match="rows.npz: corrupt.*sh"):
        load_fitted_targets(short_rows, suite)


def test_bad_arguments_raise(suite, fitted):
    _, _, path = fitted
    with pytest.raises(TypeError, match="collection"):
        load_fitted_targets(path, "webface")
    with pytest.raises(TypeError, match="model"):
        load_fitted_targets(path, suite, model="bfm")
    with pytest.raises(TypeError, match="cfg"):
        fit_collection(suite, cfg={"n_steps": 1})
    with pytest.raises(ValueError, match="suite"):
        CollectionFitConfig(suite="micc")
    with pytest.raises(ValueError, match="targets: missing"):
        save_fitted_targets(path.parent / "x.npz", {"labels": torch.zeros(2)})


def test_single_image_per_identity_raises():
    with pytest.raises(ValueError, match="single image"):
        fit_collection(make_suite("webface", **dict(TINY, images_per_identity=1)), CollectionFitConfig(n_steps=1))


# ------------------------------------------------------------------ the CLI
def test_cli_fits_saved_folder(saved, tmp_path):
    from facelab.cli import main

    out = tmp_path / "fit"
    assert main(["fit", str(saved), "--out", str(out), "--quiet", "--set", "n_steps=1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 4 and np.isfinite(report["identity_rmse_mm"]) and "study" not in report
    t = load_fitted_targets(out / "targets.npz", SavedCollection(saved))
    assert t["shape"].shape[0] == 4


def test_cli_fits_other_suites(tmp_path, capsys):
    from facelab.cli import main

    out = tmp_path / "fit"
    assert main(["fit", "collections", "--out", str(out), "--set", "n_identities=2", "--set", "images_per_identity=2",
                 "--set", "image_size=32", "--set", "n_steps=1"]) == 0
    captured = capsys.readouterr()
    assert "multi-image fits" in captured.err  # progress on stderr, the summary alone on stdout
    summary = json.loads(captured.out)
    assert [row["images_per_subject"] for row in summary["study"]] == [1, 2]
    report = json.loads((out / "report.json").read_text())
    assert report["suite"] == "collections" and report["suite_config"]["suite"] == "collections"
    t = load_fitted_targets(out / "targets.npz", make_suite("collections", **TINY))
    assert t["alpha_id"].shape[0] == 4


@pytest.mark.parametrize("make_arg, set_, match", [
    (lambda tmp: "webfase", [], "SUITE_OR_DIR 'webfase': neither a suite"),
    (lambda tmp: "micc", [], "SUITE_OR_DIR 'micc': .*facelab synth micc"),
    (lambda tmp: str(tmp), [], "holds no saved collection"),
    (lambda tmp: "webface", ["suite=lp"], "--set suite"),
])
def test_cli_fit_errors_name_the_argument(tmp_path, capsys, make_arg, set_, match):
    from facelab.cli import main

    argv = ["fit", make_arg(tmp_path), "--out", str(tmp_path / "out"), "--quiet"]
    for item in set_:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_cli_fit_folder_rejects_suite_fields_and_single_images(saved, tmp_path, capsys):
    from facelab.cli import main

    assert main(["fit", str(saved), "--out", str(tmp_path / "a"), "--set", "n_identities=3"]) == 2
    assert "--set n_identities" in capsys.readouterr().err
    single = save_collection(make_suite("webface", **dict(TINY, images_per_identity=1)), tmp_path / "single", progress=False)
    assert main(["fit", str(single), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(single) in err and "single image" in err
