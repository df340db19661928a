"""Book artifacts: export strips training state, the manifest catches damage, restore feeds the recipes."""

from __future__ import annotations

import json

import pytest
import torch

from facelab.reproduce import artifacts as A
from facelab.io.checkpoint import save_checkpoint
from facelab.models.registry import load_model


def _run(tmp_path):
    run = tmp_path / "run"
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(run / "stage.pt", model_name="regressor", model_config={"x": 1}, state_dict=net.state_dict(),
                    optimizer=opt, step=3)
    (run / "results.json").write_text("{}")
    (run / "summary.json").write_text('{"stage": {"diagnostics": {}}}')
    (run / "stage").mkdir()
    (run / "stage" / "metrics.csv").write_text("step,loss\n1,2.0\n")
    return run, net


def test_export_keeps_weights_drops_training_state(tmp_path):
    run, net = _run(tmp_path)
    dest = A.export_run(run, "demo", "facelab reproduce demo", root=tmp_path / "art")
    ckpt = torch.load(dest / "stage.pt", weights_only=True)
    assert "optimizer" not in ckpt and "rng" not in ckpt and ckpt["step"] == 3
    for k, v in net.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v)
    manifest = json.loads((dest / A.MANIFEST).read_text())
    assert manifest["command"] == "facelab reproduce demo" and set(manifest["files"]) == {"stage.pt", "results.json", "summary.json",
                                                                                             "stage/metrics.csv"}


def test_verify_names_a_modified_file(tmp_path):
    run, _ = _run(tmp_path)
    dest = A.export_run(run, "demo", "cmd", root=tmp_path / "art")
    A.verify_artifacts("demo", root=tmp_path / "art")
    with open(dest / "stage.pt", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="stage.pt: SHA-256 differs"):
        A.verify_artifacts("demo", root=tmp_path / "art")
    with pytest.raises(FileNotFoundError, match="no such artifact"):
        A.verify_artifacts("other", root=tmp_path / "art")
    with pytest.raises(FileNotFoundError, match="no \\*.pt"):
        A.export_run(tmp_path / "run" / "stage", "x", "cmd", root=tmp_path / "art")


def test_restore_copies_missing_and_changed_files(tmp_path):
    run, _ = _run(tmp_path)
    A.export_run(run, "demo", "cmd", root=tmp_path / "art")
    out = tmp_path / "out"
    assert A.restore_run("demo", out, root=tmp_path / "art") == ["stage.pt"]
    assert (out / "stage.pt").is_file() and not (out / "results.json").exists()
    # the stage summaries travel too: they hold the term diagnostics a re-scored run's claims read
    assert json.loads((out / "summary.json").read_text()) == {"stage": {"diagnostics": {}}}
    assert (out / "stage" / "metrics.csv").read_text().startswith("step,loss")
    assert A.restore_run("missing", out, root=tmp_path / "art") == []
    # a file that differs from the artifact (an older version of it) is replaced; an equal one is kept
    exported = (tmp_path / "art" / "demo" / "stage.pt").read_bytes()
    (out / "stage.pt").write_bytes(b"an older checkpoint")
    (out / "summary.json").write_text("{}")
    before = (out / "stage" / "metrics.csv").stat().st_mtime_ns
    assert A.restore_run("demo", out, root=tmp_path / "art") == ["stage.pt"]
    assert (out / "stage.pt").read_bytes() == exported
    assert json.loads((out / "summary.json").read_text()) == {"stage": {"diagnostics": {}}}
    assert (out / "stage" / "metrics.csv").stat().st_mtime_ns == before


def test_nested_runs_keep_their_layout_and_skip_trainer_state(tmp_path):
    run, net = _run(tmp_path)
    variant = run / "variant"
    variant.mkdir()
    (run / "stage.pt").rename(variant / "step2.pt")
    (run / "stage").rename(variant / "step2")
    (variant / "step2" / "last.pt").write_bytes((variant / "step2.pt").read_bytes())  # resumable trainer state
    (variant / "summary.json").write_text("{}")
    dest = A.export_run(run, "nested", "cmd", root=tmp_path / "art")
    files = set(json.loads((dest / A.MANIFEST).read_text())["files"])
    assert files == {"variant/step2.pt", "variant/step2/metrics.csv", "variant/summary.json", "summary.json",
                     "results.json"}
    out = tmp_path / "out"
    assert A.restore_run("nested", out, root=tmp_path / "art") == ["variant/step2.pt"]
    assert torch.equal(torch.load(out / "variant" / "step2.pt", weights_only=True)["state_dict"]["weight"], net.weight.detach())


@pytest.mark.parametrize("name", sorted(p.name for p in A.ARTIFACTS_DIR.glob("*") if (p / A.MANIFEST).is_file()))
def test_committed_artifacts_match_manifest_and_load(name):
    manifest = A.verify_artifacts(name)
    for fname in manifest["files"]:
        if fname.endswith(".pt"):
            model, ckpt = load_model(A.ARTIFACTS_DIR / name / fname)
            assert "optimizer" not in ckpt and sum(p.numel() for p in model.parameters()) > 0


def test_export_can_skip_seed_folders(tmp_path):
    """Skipped sub-folders lose their checkpoints but keep their result files; the manifest says so."""
    run, _ = _run(tmp_path)
    seed = run / "seed1"
    save_checkpoint(seed / "stage.pt", model_name="regressor", model_config={"x": 1},
                    state_dict=torch.nn.Linear(3, 2).state_dict(), step=1)
    (seed / "summary.json").write_text("{}")
    dest = A.export_run(run, "skipping", "cmd", root=tmp_path / "art", skip=("seed1",))
    manifest = json.loads((dest / A.MANIFEST).read_text())
    assert "seed1/stage.pt" not in manifest["files"] and "seed1/summary.json" in manifest["files"]
    assert "stage.pt" in manifest["files"] and manifest["checkpoints_not_exported"] == ["seed1"]
    with pytest.raises(FileNotFoundError, match="skip"):
        A.export_run(run, "bad", "cmd", root=tmp_path / "art", skip=("seed9",))


def test_export_keeps_the_log_and_config_of_a_stopped_trial(tmp_path):
    """A stage folder without a finished checkpoint (a trial stopped early) ships its log and config, not its last.pt."""
    run, _ = _run(tmp_path)
    trial = run / "tuning" / "w_0.1" / "warmup"
    trial.mkdir(parents=True)
    (trial / "metrics.csv").write_text("step,loss\n10,3.0\n")
    (trial / "config.json").write_text('{"recipe": {"w": 0.1}}')
    (trial / "last.pt").write_bytes(b"resumable state")
    dest = A.export_run(run, "trial", "cmd", root=tmp_path / "art")
    manifest = json.loads((dest / A.MANIFEST).read_text())
    files = set(manifest["files"])
    assert manifest["name"] == "trial"  # the artifact's own name, whatever the stopped trial's files are called
    assert {"tuning/w_0.1/warmup/metrics.csv", "tuning/w_0.1/warmup/config.json"} <= files
    assert not any(f.endswith("last.pt") for f in files) and "stage/config.json" not in files
