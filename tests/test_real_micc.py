"""The MICC real-data path end to end: the micc suite exported in the MICC layout, scored from disk.

``facelab synth micc --format micc`` writes the folder; a parser written here (regexes, json,
a hand-read OBJ) checks the layout against the suite; ``facelab eval model CKPT --micc ROOT``
scores the committed Liu et al. quick checkpoint on it, which must equal the suite path on the
same 8-bit frames, stay within the 8-bit rounding of ``facelab eval model CKPT --suite micc``,
and agree with errors recomputed here from the files with :func:`facelab.metrics.micc_error`.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelab.cli import main
from facelab.data import MICCVideos, StoredSuite, export_micc, make_suite
from facelab.data.lfw_folder import to_uint8
from facelab.metrics import micc_error
from facelab.metrics.micc_folder import micc_videos_for, score_micc_folder
from facelab.metrics.model_eval import ModelEvalConfig, RenderedSuite, micc_suite, score_micc
from facelab.models import build_model, load_evaluable

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "book" / "artifacts" / "liu2018-quick" / "phase3.pt"
N_SUBJECTS = 2
FRAMES = 6  # the quick profile's frames per video: what `--suite micc --set micc_identities=2` renders
CONDITIONS = ("cooperative", "indoor", "outdoor")
SUBJECT = re.compile(r"^subject_\d{2}$")
FRAME = re.compile(r"^frame_(\d{4})\.png$")
# 8-bit rounding of the frames moves the Liu quick model's errors by about 1e-3 mm here
# (measured: at most 0.004 mm over rows and conditions); a broken pipeline moves them by tenths.
ROUNDING_MM = 0.02
EXACT_MM = 1e-9
RECOMPUTE_MM = 1e-9  # same frames, same batch: the same numbers


def read_obj(path: Path):
    """Vertices ``(V, 3)`` and 0-based triangles ``(F, 3)`` of a plain ``v``/``f`` OBJ."""
    verts, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts and parts[0] == "f":
            faces.append([int(x.split("/")[0]) - 1 for x in parts[1:4]])
    return np.array(verts), np.array(faces)


def parse_folder(root: Path) -> dict:
    """An independent reader of the layout: ``{subject: {condition: [frame numbers]}}``."""
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        assert SUBJECT.match(d.name), d.name
        assert sorted(p.name for p in d.iterdir() if p.is_file()) == ["landmarks.txt", "scan.obj"], d
        assert sorted(p.name for p in d.iterdir() if p.is_dir()) == sorted(CONDITIONS), d
        out[d.name] = {}
        for c in CONDITIONS:
            numbers = []
            for f in sorted((d / c).iterdir()):
                m = FRAME.match(f.name)
                assert m, f
                numbers.append(int(m.group(1)))
            out[d.name][c] = numbers
    return out


@pytest.fixture(scope="module")
def model():
    assert CKPT.is_file(), f"{CKPT}: the committed liu2018-quick checkpoint is missing"
    return load_evaluable(CKPT)


@pytest.fixture(scope="module")
def cfg():
    return ModelEvalConfig(micc_identities=N_SUBJECTS, device="cpu").resolved("quick")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    """The folder, written by the CLI at the checkpoint's photo size and mesh resolution."""
    root = tmp_path_factory.mktemp("micc") / "root"
    H, W = model.config.image_size
    rc = main(["synth", "micc", "--format", "micc", "--out", str(root), "--quiet",
               "--set", f"n_identities={N_SUBJECTS}", "--set", f"frames_per_video={FRAMES}",
               "--set", f"image_size={H},{W}", "--set", f"resolution={model.config.resolution}"])
    assert rc == 0
    return root


@pytest.fixture(scope="module")
def suite(model, cfg):
    """What `--suite micc --set micc_identities=2` renders, rendered once and replayed."""
    s = RenderedSuite(micc_suite(model, "quick", cfg))
    assert (s.n_identities, s.config.frames_per_video) == (N_SUBJECTS, FRAMES)
    return s


def test_layout_independent_parser(exported, suite):
    tree = parse_folder(exported)
    assert list(tree) == ["subject_01", "subject_02"]
    for videos in tree.values():
        assert all(numbers == list(range(1, FRAMES + 1)) for numbers in videos.values())
    # suite order: subject, condition, frame; each file holds that frame's 8-bit pixels
    keys = [f"subject_{k + 1:02d}/{c}/frame_{f + 1:04d}.png"
            for k in range(N_SUBJECTS) for c in CONDITIONS for f in range(FRAMES)]
    batch = next(suite.batches(len(suite)))
    assert batch["label"].tolist() == [int(key[8:10]) - 1 for key in keys]
    assert [CONDITIONS[c] for c in batch["condition"].tolist()] == [key.split("/")[1] for key in keys]
    pixels = to_uint8(batch["image"])
    landmarks = json.loads((exported / "landmarks.json").read_text())
    yaw = json.loads((exported / "yaw.json").read_text())
    assert sorted(landmarks) == sorted(keys) and sorted(yaw) == sorted(keys)
    for i, key in enumerate(keys):
        assert np.array_equal(np.asarray(Image.open(exported / key).convert("RGB")), pixels[i]), key
        assert np.allclose(landmarks[key], batch["landmarks2d"][i].numpy(), atol=1e-5), key
        assert yaw[key] == pytest.approx(float(batch["yaw_deg"][i]), abs=1e-5), key
    # cooperative videos sweep the yaw from one side to the other, as MICC's
    assert yaw["subject_01/cooperative/frame_0001.png"] < 0 < yaw[f"subject_01/cooperative/frame_{FRAMES:04d}.png"]
    morphable = suite.model
    for k in range(N_SUBJECTS):
        verts, faces = read_obj(exported / f"subject_{k + 1:02d}" / "scan.obj")
        truth = suite.scan(k).numpy()
        assert np.array_equal(verts.astype(np.float32), truth), "the scan is the true neutral shape, float32-exact"
        assert np.array_equal(faces, morphable.faces.numpy())
        points = np.loadtxt(exported / f"subject_{k + 1:02d}" / "landmarks.txt")
        assert np.array_equal(points.astype(np.float32), truth[morphable.landmarks.numpy()])
        assert np.array_equal(points[30].astype(np.float32), truth[morphable.nose_tip])  # the crop centre


def test_folder_score_equals_suite_score(exported, suite, model, cfg, capsys):
    assert main(["eval", "model", str(CKPT), "--micc", str(exported), "--json", "--set", "device=cpu"]) == 0
    folder = json.loads(capsys.readouterr().out)
    assert (folder["subjects"], folder["n_videos"], folder["n_frames"]) == (
        ["subject_01", "subject_02"], 3 * N_SUBJECTS, 3 * N_SUBJECTS * FRAMES)
    assert folder["skipped"] == [] and folder["yaw_file"] == str(exported / "yaw.json")
    assert main(["eval", "model", str(CKPT), "--suite", "micc", "--json", "--set", "device=cpu",
                 "--set", f"micc_identities={N_SUBJECTS}"]) == 0
    floats = json.loads(capsys.readouterr().out)["micc"]
    stored = score_micc(model, "quick", cfg, suite=StoredSuite(suite))  # the suite path on the stored 8-bit frames
    assert set(folder["micc"]) == set(floats) == set(stored) == {"average_over_identity", "three_view", "single_frame"}
    worst = 0.0
    for row, conds in stored.items():
        assert set(folder["micc"][row]) == set(conds) == {*CONDITIONS, "all"}
        for cond, want in conds.items():
            got = folder["micc"][row][cond]
            assert got["n"] == want["n"] == floats[row][cond]["n"]
            assert got["mean"] == pytest.approx(want["mean"], abs=EXACT_MM), (row, cond)
            assert got["std"] == pytest.approx(want["std"], abs=EXACT_MM), (row, cond)
            worst = max(worst, abs(got["mean"] - floats[row][cond]["mean"]))
    print(f"MICC folder vs --suite micc (float frames): largest difference {worst:.4f} mm")
    assert worst <= ROUNDING_MM


def test_single_frame_recomputed_from_files(exported, model, capsys):
    """The single-frame row from the files alone: frames -> model -> middle frame -> micc_error."""
    from facelab.metrics.lfw_folder import _morphable

    assert main(["eval", "model", str(CKPT), "--micc", str(exported), "--json", "--set", "device=cpu"]) == 0
    result = json.loads(capsys.readouterr().out)["micc"]["single_frame"]
    morphable = _morphable(model.config.resolution, "cpu")
    landmarks = json.loads((exported / "landmarks.json").read_text())
    tree = parse_folder(exported)
    keys = [f"{s}/{c}/frame_{n:04d}.png" for s in tree for c in CONDITIONS for n in tree[s][c]]
    images = [np.asarray(Image.open(exported / key).convert("RGB")) for key in keys]
    # one forward pass over every frame, as the scorer batches them (batch size 64 > 36 frames)
    batch = {"image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255,
             "landmarks2d": torch.tensor([landmarks[key] for key in keys], dtype=torch.float32)}
    with torch.no_grad():
        pred = model.reconstruct(model.prepare_images(batch), morphable)["identity_shape"].double().numpy()
    lm_idx = morphable.landmarks.numpy()
    for cond in CONDITIONS:
        errs = []
        for subject in tree:
            middle = keys.index(f"{subject}/{cond}/frame_{FRAMES // 2 + 1:04d}.png")  # 0-based FRAMES // 2
            # the files hold float32 values (9 digits); ICP stops on a 1e-3 mm step, so even
            # 1e-8 mm of decimal noise could stop it one iteration apart
            scan = read_obj(exported / subject / "scan.obj")[0].astype(np.float32).astype(np.float64)
            points = np.loadtxt(exported / subject / "landmarks.txt").astype(np.float32).astype(np.float64)
            errs.append(micc_error(pred[middle], morphable.faces.numpy(), scan, nose_tip_gt=points[30],
                                   pred_landmarks=pred[middle][lm_idx], gt_landmarks=points, max_iter=30,
                                   tol=1e-3)["mean"])
        assert result[cond]["mean"] == pytest.approx(np.mean(errs), abs=RECOMPUTE_MM), cond


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 32 px folder of 2 subjects x 3 videos x 2 frames for the error cases (cheap to copy and damage)."""
    root = tmp_path_factory.mktemp("tiny") / "root"
    export_micc(make_suite("micc", n_identities=2, frames_per_video=2, image_size=32, resolution="quick"), root)
    return root


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"}).eval()


def test_bad_frame_raises_or_is_skipped(tiny, tmp_path, tiny_model, capsys):
    root = tmp_path / "root"
    shutil.copytree(tiny, root)
    bad = root / "subject_02" / "indoor" / "frame_0001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"subject_02/indoor/frame_0001\.png: not a readable image.*skip"):
        MICCVideos(root)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable frame"):
        ds = MICCVideos(root, on_bad_image="skip")
    assert len(ds) == 11 and ds.skipped[0][0] == bad
    assert "subject_02/indoor/frame_0001.png" not in [ds.key(i) for i in range(len(ds))]
    # the video keeps its other frame, now frame 0 of that video
    i = [ds.key(j) for j in range(len(ds))].index("subject_02/indoor/frame_0002.png")
    assert (int(ds[i]["label"]), int(ds[i]["condition"]), int(ds[i]["frame"])) == (1, 1, 0)
    cfg = ModelEvalConfig(device="cpu").resolved("quick")
    with pytest.warns(UserWarning):
        rows = score_micc_folder(tiny_model, micc_videos_for(tiny_model, root, on_bad_image="skip"), cfg)
    assert rows["single_frame"]["indoor"]["n"] == 2 and np.isfinite(rows["single_frame"]["all"]["mean"])
    assert main(["eval", "model", str(CKPT), "--micc", str(root)]) == 2
    assert "frame_0001.png: not a readable image" in capsys.readouterr().err
    with pytest.warns(UserWarning):
        assert main(["eval", "model", str(CKPT), "--micc", str(root), "--on-bad-image", "skip", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["skipped"] == [str(bad)] and result["n_frames"] == 11


def test_missing_scan_named(tiny, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(tiny, root)
    (root / "subject_02" / "scan.obj").unlink()
    with pytest.raises(ValueError, match=r"subject_02: expected one scan mesh"):
        MICCVideos(root)
    assert main(["eval", "model", str(CKPT), "--micc", str(root)]) == 2
    assert "subject_02: expected one scan mesh" in capsys.readouterr().err


def test_scan_landmarks_needed_nose_tip_enough(tiny, tmp_path, tiny_model):
    root = tmp_path / "root"
    shutil.copytree(tiny, root)
    cfg = ModelEvalConfig(device="cpu").resolved("quick")
    full = score_micc_folder(tiny_model, micc_videos_for(tiny_model, root), cfg)
    points = np.loadtxt(root / "subject_01" / "landmarks.txt")
    (root / "subject_01" / "landmarks.txt").unlink()
    with pytest.raises(ValueError, match=r"subject_01: no landmarks\.txt"):
        score_micc_folder(tiny_model, micc_videos_for(tiny_model, root), cfg)
    # the nose tip alone: the crop is the same, the ICP starts from the centroids instead
    np.savetxt(root / "subject_01" / "landmarks.txt", points[30:31])
    (root / "yaw.json").unlink()
    folder = micc_videos_for(tiny_model, root)
    assert torch.equal(folder.nose_tip(0), torch.from_numpy(points[30]).float())
    nose_only = score_micc_folder(tiny_model, folder, cfg)
    assert set(nose_only) == {"average_over_identity", "single_frame"}, "no yaws, no three-view row"
    assert nose_only["single_frame"]["all"]["n"] == full["single_frame"]["all"]["n"] == 6
    assert np.isfinite(nose_only["single_frame"]["all"]["mean"])


def test_cli_refusals(tiny, capsys):
    assert main(["synth", "lfw", "--format", "micc", "--out", str(tiny / "x")]) == 2
    assert "only the micc suite" in capsys.readouterr().err
    assert main(["eval", "model", str(CKPT), "--micc", str(tiny), "--profile", "full"]) == 2
    assert "--profile" in capsys.readouterr().err
    assert main(["eval", "model", str(CKPT), "--micc", str(tiny), "--set", "micc_identities=5"]) == 2
    assert "micc_identities" in capsys.readouterr().err
    assert main(["eval", "model", str(CKPT), "--micc", str(tiny), "--pairs", str(tiny / "pairs.txt")]) == 2
    assert "--pairs" in capsys.readouterr().err
    assert main(["eval", "model", str(CKPT), "--suite", "micc", "--yaw", str(tiny / "yaw.json")]) == 2
    assert "--yaw" in capsys.readouterr().err
