"""The ``facelab`` command line.

    facelab synth SUITE --out DIR [--profile quick|full] [--set key=value ...]
    facelab synth lfw --format lfw --out ROOT [...]   (the real LFW layout: NAME/NAME_0001.png, pairs.txt, landmarks.json)
    facelab synth lp --format lp300w --out ROOT [...]   (the 300W-LP layout: NAME.png + NAME.mat, model.npz)
    facelab synth webface --format imagefolder --out ROOT [...]   (CASIA-WebFace layout: NAME/NAME_0001.png, landmarks.json)
    facelab synth micc --format micc --out ROOT [...]   (MICC layout: subject_01/scan.obj, subject_01/indoor/frame_0001.png)
    facelab render [--out face.png] [--identity N] [--yaw DEG] [--size PX]
    facelab render --gallery [--out gallery.png]
    facelab bench render [--json]
    facelab bench synth [--json]
    facelab bench infer [liu2018] [--json]
    facelab bench train [liu2018|gao2020|sir] [--steps N] [--threads 1,2] [--json]
    facelab train regressor|liu2018|gao2020|sir [--out DIR] [--profile quick|standard|full] [--set key=value|train.key=value ...]
    facelab fit SUITE_OR_DIR --out DIR [--profile quick|full] [--set key=value ...]   (DIR: facelab synth's, or ROOT/<identity>/<image>.jpg + landmarks.json)
    facelab eval verify|recon|baselines ...   (see facelab.eval_cli)
    facelab reproduce liu2018 --out DIR [--profile quick|standard|full] [--seeds 0,1,2] [--json] [--set train.k=v|eval.k=v|baselines.k=v ...]
    facelab reproduce gao2020 --out DIR [--profile quick|standard|full] [--seeds 0,1,2] [--liu PHASE3] [--json] [--set ...]
    facelab reproduce sir --out DIR [--profile quick|standard|full] [--seeds 0,1,2] [--json] [--liu PHASE3] [--set train.k=v|eval.k=v|sir.k=v ...]
    facelab photo IMAGE --out DIR [--json] [--largest] [--detector hog|cnn] [--model PATH] [--liu PHASE3 | --no-liu]
    facelab landmarks ROOT [--out FILE] [--detector hog|cnn] [--on-no-face skip|raise] [--quiet]   (writes ROOT/landmarks.json)
    facelab book student --out DIR [NOTEBOOKS...]     (teacher mode, see facelab.teach)
    facelab book check ANSWER.ipynb [--against CHAPTER.ipynb] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_synth(args) -> int:
    from facelab.config import apply_overrides
    from facelab.data import PhotoCollection, SuiteConfig, export_image_folder, export_lfw, save_collection

    if args.format == "lfw" and args.suite != "lfw":
        raise ValueError(f"--format lfw: only the lfw suite has verification pairs, got {args.suite!r}")
    if args.format == "micc" and args.suite != "micc":
        raise ValueError(f"--format micc: only the micc suite has videos and scans, got {args.suite!r}")
    cfg = apply_overrides(SuiteConfig(suite=args.suite, profile=args.profile), args.set)
    collection = PhotoCollection(cfg)
    if args.format == "lfw":
        info = export_lfw(collection, args.out, batch_size=args.batch_size, progress=not args.quiet)
        print(json.dumps({"suite": cfg.suite, "format": "lfw", **info, "resolution": cfg.resolution, "seed": cfg.seed}))
        return 0
    if args.format == "lp300w":
        from facelab.data import export_lp300w

        info = export_lp300w(collection, args.out, batch_size=args.batch_size, progress=not args.quiet)
        print(json.dumps({"suite": cfg.suite, "format": "lp300w", **info, "resolution": cfg.resolution, "seed": cfg.seed}))
        return 0
    if args.format == "micc":
        from facelab.data import export_micc

        info = export_micc(collection, args.out, batch_size=args.batch_size, progress=not args.quiet)
        print(json.dumps({"suite": cfg.suite, "format": "micc", **info, "resolution": cfg.resolution, "seed": cfg.seed}))
        return 0
    if args.format == "imagefolder":
        info = export_image_folder(collection, args.out, batch_size=args.batch_size, progress=not args.quiet)
        print(json.dumps({"suite": cfg.suite, "format": "imagefolder", **info, "resolution": cfg.resolution,
                          "seed": cfg.seed}))
        return 0
    out = save_collection(collection, args.out, batch_size=args.batch_size, progress=not args.quiet)
    print(json.dumps({"suite": cfg.suite, "images": len(collection), "identities": cfg.n_identities, "out": str(out)}))
    return 0


def _cmd_render(args) -> int:
    import torch

    from facelab.viz import image_grid, save_image

    if args.gallery:
        from facelab.data.gallery import gallery

        images, columns = gallery(n_identities=args.identities, image_size=args.size, seed=args.seed, resolution=args.resolution)
        out = Path(args.out or "gallery.png")
        image_grid(images, ncols=len(columns), pad=2, path=out)
        print(json.dumps({"out": str(out), "rows": args.identities, "columns": list(columns)}))
        return 0
    from facelab.data import make_suite

    suite = make_suite("webface", n_identities=args.identity + 1, images_per_identity=1, image_size=args.size,
                       seed=args.seed, resolution=args.resolution)
    scene = suite.scene(torch.tensor([args.identity]))
    if args.yaw is not None:
        scene["angles"][:, 1] = torch.deg2rad(torch.tensor(float(args.yaw)))
    if args.neutral:
        scene["blend"].zero_()
    sample = suite.render_scene(scene)
    out = Path(args.out or "face.png")
    save_image(sample["image"][0], out)
    print(json.dumps({"out": str(out), "identity": args.identity, "yaw_deg": round(float(sample["yaw_deg"][0]), 2)}))
    return 0


def _cmd_bench(args) -> int:
    if args.what not in ("infer", "train") and args.model is not None:
        raise ValueError(f"model: only 'bench infer' and 'bench train' take a model, got {args.model!r}")
    if args.what == "infer" and args.model not in (None, "liu2018"):
        raise ValueError(f"model: 'bench infer' times liu2018 only, got {args.model!r}")
    if args.what == "train":
        from facelab.bench.train import bench_train, format_bench_train

        threads = tuple(int(t) for t in args.threads.split(","))
        result = bench_train(args.model or "liu2018", steps=args.steps, threads=threads)
        if not args.json:
            print(format_bench_train(result))
            return 0
    elif args.what == "infer":
        from facelab.bench.infer import bench_infer

        result = bench_infer(model=args.model or "liu2018")
        if not args.json:
            for profile in ("quick", "full"):
                row = result[profile]
                print(f"{profile} ({row['encoder']}, {row['params']} params): "
                      f"{row['batch_1_ms_per_image']:.2f} ms/image at batch 1, {row['batch_64_ms_per_image']:.2f} at batch 64")
            print(f"{result['threads']} CPU threads; the paper: {result['paper_ms_per_image_gpu']} ms/image on a GTX 1080")
            return 0
    elif args.what == "render":
        from facelab.bench.render import bench_render

        result = bench_render(batch=args.batch)
        if not args.json:
            for size, row in result.items():
                if isinstance(row, dict):
                    print(f"{size:>4} px: torch {row['torch_images_per_s']:.1f} img/s, pytorch3d {row['pytorch3d_images_per_s']:.1f} img/s, speedup {row['speedup']:.1f}x")
            return 0
    else:
        from facelab.bench.synth import bench_synth

        result = bench_synth(image_size=args.size)
        if not args.json:
            print(f"{result['images_per_s']:.1f} images/s at {args.size} px")
            return 0
    print(json.dumps(result))
    return 0


def _cmd_train(args) -> int:
    from facelab.config import apply_overrides
    from facelab.train.recipes import RECIPES

    recipe = RECIPES[args.model]
    cfg = apply_overrides(recipe.config_class(profile=args.profile), args.set)
    if args.out:
        cfg.out_dir = args.out
    out = recipe.train(cfg)
    print(json.dumps({"model": args.model, "profile": args.profile, "out": str(out),
                      "checkpoint": str(recipe.final_path(out))}))
    return 0


#: ``--set`` fields of ``facelab fit`` that apply to a folder of photos: the size photos are resized to, the model fitted
PHOTO_FOLDER_FIELDS = ("image_size", "resolution")


def _fit_source(source: str, overrides: list[str]):
    """``facelab fit``'s positional: an existing folder (a saved collection, or photos in identity
    folders: returned as its :class:`Path`) or a suite name (None)."""
    from facelab.data import SUITES, SavedCollection
    from facelab.fitting import FIT_SUITES
    from facelab.fitting.photometric import SUITE_FIELDS

    path = Path(source)
    if path.is_dir():  # an existing folder wins over a suite name
        photos = not (path / "manifest.json").exists()  # no manifest: photos in one folder per identity
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            if key in SUITE_FIELDS and not (photos and key in PHOTO_FOLDER_FIELDS):
                kind = "a folder of identity folders" if photos else "a saved folder"
                raise ValueError(f"--set {key}: describes a suite to generate, but SUITE_OR_DIR {source!r} is {kind}")
        if photos:
            return path
        try:
            return SavedCollection(path)
        except FileNotFoundError as err:
            raise ValueError(f"SUITE_OR_DIR {source!r}: folder holds no saved collection "
                             f"(write one with `facelab synth SUITE --out {source}`): {err}") from None
        except ValueError as err:
            raise ValueError(f"SUITE_OR_DIR {source!r}: {err}") from None
    if source in FIT_SUITES:
        return None
    if source in SUITES:
        raise ValueError(f"SUITE_OR_DIR {source!r}: `facelab fit` generates only {', '.join(FIT_SUITES)}; "
                         f"write {source} with `facelab synth {source} --out DIR` and fit DIR")
    raise ValueError(f"SUITE_OR_DIR {source!r}: neither a suite ({', '.join(FIT_SUITES)}) nor an existing folder")


def _photo_folder(path: Path, cfg, args):
    """``facelab fit ROOT`` of photos in identity folders (``ROOT/<identity>/<image>.jpg``)."""
    from facelab.data import ImageFolderIdentities

    if not any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir()):
        raise ValueError("folder holds no saved collection (no manifest.json; write one with `facelab synth SUITE "
                         "--out DIR`) and no identity folders (ROOT/<identity>/<image>.jpg)")
    resize = any(item.split("=", 1)[0].strip() == "image_size" for item in args.set)  # else the files' own size
    return ImageFolderIdentities(path, image_size=cfg.image_size if resize else None, on_bad_image=args.on_bad_image,
                                 small_identities=args.small_identities, progress=not args.quiet)


def _cmd_fit(args) -> int:
    from facelab.config import apply_overrides
    from facelab.fitting import CollectionFitConfig, fit_collection, fit_collection_study, save_fitted_targets

    if any(item.split("=", 1)[0].strip() == "suite" for item in args.set):
        raise ValueError("--set suite: give the suite as SUITE_OR_DIR")
    saved = _fit_source(args.source, args.set)
    keys = {item.split("=", 1)[0].strip() for item in args.set}
    if "morphable" in keys and not isinstance(saved, Path):
        what = "a saved folder" if saved is not None else f"the generated suite {args.source!r}"
        raise ValueError(f"--set morphable: {what} is fitted with its own SynthFaces model (its true shapes are "
                         "SynthFaces'); --set morphable=PATH applies to photos in identity folders (write them with "
                         "`facelab synth SUITE --format imagefolder --out ROOT` and fit ROOT)")
    if {"morphable", "resolution"} <= keys:
        raise ValueError("--set resolution: picks the SynthFaces model to fit, but --set morphable=PATH fits that "
                         "file instead; give one of them")
    if not isinstance(saved, Path) and (args.on_bad_image, args.small_identities) != ("raise", "raise"):
        raise ValueError("--on-bad-image, --small-identities: apply to photos in identity folders only")
    say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if saved is None:
        cfg = apply_overrides(CollectionFitConfig(profile=args.profile, suite=args.source), args.set)
        targets, report = fit_collection_study(cfg, progress=say)
    else:
        cfg = apply_overrides(CollectionFitConfig(profile=args.profile), args.set)
        try:
            if isinstance(saved, Path):
                saved = _photo_folder(saved, cfg, args)
            targets, report = fit_collection(saved, cfg, progress=say)
        except ValueError as err:
            raise ValueError(f"SUITE_OR_DIR {args.source!r}: {err}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_fitted_targets(out / "targets.npz", targets)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    summary = {"out": str(out), "identity_rmse_mm": report["identity_rmse_mm"]}
    if "study" in report:
        summary["study"] = report["study"]
    else:
        summary.update(images=report["n_images"], identities=report["n_identities"])
    print(json.dumps(summary))
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)`` (an argparse type: a bad value names the option)."""
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _cmd_reproduce(args) -> int:
    from facelab.metrics.report import write_json
    from facelab.reproduce import REPRODUCTIONS

    reproduction = REPRODUCTIONS[args.paper]
    if args.liu is not None and not reproduction.uses_liu:
        raise ValueError(f"--liu: the {args.paper} table has no Liu et al. row")
    result = reproduction(args.profile, args.out, args.set, liu=args.liu, with_baselines=not args.no_baselines,
                          seeds=args.seeds)
    for key in reproduction.terminal_drop:  # per-vertex arrays: in results.json, too long for the terminal
        result.pop(key, None)
    print(write_json(result, indent=None) if args.json else reproduction.markdown(result))
    return 0


def _cmd_artifacts(args) -> int:
    from facelab.reproduce import artifacts as A

    if args.action == "export":
        if not args.run_dir or not args.cmdline:
            raise SystemExit("facelab artifacts export NAME --run-dir DIR --cmdline '...': both are required")
        print(A.export_run(args.run_dir, args.name, args.cmdline, skip=tuple(args.skip)))
    else:
        manifest = A.verify_artifacts(args.name)
        print(f"{args.name}: {len(manifest['files'])} files match {A.MANIFEST} ({manifest['command']})")
    return 0


def _cmd_photo(args) -> int:
    from facelab.apps.photo import MissingPhotoExtra, photo_summary, reconstruct_photo, write_photo

    try:
        results = reconstruct_photo(args.image, model=args.model, detector=args.detector, largest=args.largest,
                                    liu_checkpoint=args.liu, run_liu=not args.no_liu, min_score=args.min_score)
    except MissingPhotoExtra as err:  # an ImportError: main() would print a traceback
        print(f"facelab photo: error: {err}", file=sys.stderr)
        return 2
    files = write_photo(results, args.image, args.out)
    summary = photo_summary(results, image=args.image, files=files, detector=args.detector,
                            model=args.model or "SynthFaces (default mesh)")
    if args.json:
        print(json.dumps(summary))
        return 0
    for face in summary["faces"]:
        liu = face["liu_identity_rms_from_mean_mm"]
        print(f"face {face['index']} (score {face['score']:.2f}): landmark fit {face['landmark_error_px']:.2f} px from dlib's, "
              f"yaw {face['pose']['yaw_deg']:.1f} deg"
              + (f"; Liu et al.'s identity shape {liu:.2f} mm RMS from the mean face "
                 f"(a typical identity: {face['typical_identity_rms_mm']:.2f})" if liu is not None else "")
              + f" -> {', '.join(face['files'].values())}")
    print(f"note: {summary['licence']}")
    return 0


def _cmd_landmarks(args) -> int:
    from facelab.apps.landmarks import MAX_NAMED, landmark_folder
    from facelab.apps.photo import MissingPhotoExtra

    try:
        report = landmark_folder(args.root, out=args.out, detector=args.detector, on_no_face=args.on_no_face,
                                 on_bad_image=args.on_bad_image, progress=not args.quiet, min_score=args.min_score)
    except MissingPhotoExtra as err:  # an ImportError: main() would print a traceback
        print(f"facelab landmarks: error: {err}", file=sys.stderr)
        return 2
    print(f"{report['landmarks']}: landmarks of {report['n_landmarked']} of {report['n_images']} photos "
          f"(report: {report['report']})")
    for what, keys in (("no face", report["no_face"]), ("unreadable", list(report["unreadable"])),
                       ("several faces, the largest kept", list(report["several_faces"]))):
        if keys:
            more = f", ... ({len(keys) - MAX_NAMED} more)" if len(keys) > MAX_NAMED else ""
            print(f"{len(keys)} {what}: {', '.join(keys[:MAX_NAMED])}{more}")
    print(f"note: {report['licence']}")
    return 0


def _cmd_book(args) -> int:
    from facelab import teach

    if args.action == "student":
        if not args.notebooks and not Path("book").is_dir():
            raise ValueError("NOTEBOOK: no book/ folder here; name the chapters to convert")
        written = teach.write_student(args.notebooks or [Path("book")], args.out)
        print(json.dumps({"out": str(args.out), "notebooks": [p.name for p in written]}))
        return 0
    results = teach.check_notebook(args.notebook, timeout=args.timeout, checks_from=args.against)
    print(teach.results_table(results))
    return 0 if all(r.passed for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    from facelab.data.suites import SUITES
    from facelab.reproduce import REPRODUCTIONS
    from facelab.train.recipes import RECIPES

    parser = argparse.ArgumentParser(prog="facelab", description="facelab: 3D face reconstruction and recognition on SynthFaces.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a SynthFaces suite and write it to a folder")
    p.add_argument("suite", choices=SUITES)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--profile", default="quick", choices=["quick", "standard", "full"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SuiteConfig field (repeatable)")
    p.add_argument("--format", default="facelab", choices=["facelab", "lfw", "imagefolder", "lp300w", "micc"],
                   help="facelab: manifest + shards (facelab.data.SavedCollection); lfw (lfw suite only): the real "
                        "LFW layout, ROOT/NAME/NAME_0001.png, ROOT/pairs.txt and ROOT/landmarks.json "
                        "(facelab.data.lfw_folder), scored by `facelab eval model CKPT --lfw ROOT`; imagefolder: "
                        "one folder per identity as CASIA-WebFace, ROOT/NAME/NAME_0001.png and ROOT/landmarks.json "
                        "(facelab.data.ImageFolderIdentities), fitted by `facelab fit ROOT`"
                        "; lp300w: the 300W-LP layout, ROOT/NAME.png + ROOT/NAME.mat (Pose_Para, Shape_Para, Exp_Para, "
                        "pt2d, pt3d_68) and ROOT/model.npz (facelab.data.lp300w), read by facelab.data.LP300W"
                        "; micc (micc suite only): ROOT/subject_01/scan.obj + landmarks.txt, ROOT/subject_01/"
                        "{cooperative,indoor,outdoor}/frame_0001.png, ROOT/landmarks.json and ROOT/yaw.json "
                        "(facelab.data.micc_folder), scored by `facelab eval model CKPT --micc ROOT`")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("render", help="render a SynthFaces face, or the gallery, to PNG")
    p.add_argument("--out", help="PNG path (default face.png / gallery.png)")
    p.add_argument("--identity", type=int, default=0, help="webface identity label")
    p.add_argument("--yaw", type=float, help="yaw in degrees (default: sampled)")
    p.add_argument("--neutral", action="store_true", help="neutral expression")
    p.add_argument("--size", type=int, default=128, help="image size in px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", default="default", choices=["quick", "default", "large"])
    p.add_argument("--gallery", action="store_true", help="rows: identities; columns: expressions, poses, lighting, occluders")
    p.add_argument("--identities", type=int, default=6, help="gallery rows")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("train", help="train a model; resumes when the output folder holds a checkpoint")
    p.add_argument("model", choices=list(RECIPES), help="; ".join(f"{k}: {r.summary}" for k, r in RECIPES.items()))
    p.add_argument("--profile", default="quick", choices=["quick", "standard", "full"])
    p.add_argument("--out", help="run folder (default runs/<model>-<profile>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the recipe's config; its loop options as train.KEY (train.lr=5e-4, "
                        "or lr=5e-4 for short) (repeatable). liu2018 on photos in identity folders: "
                        "data.kind=imagefolder data.train=ROOT targets=fitted targets_path=FIT/targets.npz "
                        "(`facelab fit ROOT --out FIT`); morphable=PATH: the 3DMM file of the decoders. "
                        "sir on folders: data.kind=real data.labelled=LP (300W-LP layout, its 68 landmarks) "
                        "data.identities=IDS (identity folders), morphable=PATH as for liu2018. gao2020 on folders: "
                        "data.kind=real data.labelled=LP (300W-LP layout with coefficients) data.collections=COL "
                        "(identity folders with landmarks.json), morphable=PATH: the model of LP's coefficients "
                        "(default LP/model.npz; another mesh is resampled onto the grid)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("fit", help="multi-image 3DMM fitting of a suite or saved folder: training targets + fitted-vs-true report")
    p.add_argument("source", metavar="SUITE_OR_DIR",
                   help="webface, collections or lp (generated; adds the single- vs multi-image study), "
                        "a folder written by `facelab synth`, or photos in identity folders ROOT/<identity>/<image>.jpg "
                        "with ROOT/landmarks.json (CASIA-WebFace layout; --set image_size=N resizes to N x N, "
                        "--set resolution= picks the SynthFaces model, --set morphable=PATH fits any model file "
                        "facelab.io.load_morphable reads instead and records its path (relative to --out when the model "
                        "lies inside or beside it) and content hash, as "
                        "`facelab train liu2018 --set morphable=PATH` expects) (an existing folder wins over a suite name)")
    p.add_argument("--out", required=True, help="output folder (targets.npz, report.json)")
    p.add_argument("--profile", default="quick", choices=["quick", "standard", "full"], help="suite size (generated suites only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a CollectionFitConfig field (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.add_argument("--on-bad-image", default="raise", choices=["raise", "skip"],
                   help="identity folders: an unreadable photo stops the fit, or is left out with a warning")
    p.add_argument("--small-identities", default="raise", choices=["raise", "drop"],
                   help="identity folders: a folder with fewer than 2 readable photos stops the fit, or is left out")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("bench", help="print measured performance figures")
    p.add_argument("what", choices=["render", "synth", "infer", "train"])
    p.add_argument("model", nargs="?", choices=["liu2018", "gao2020", "sir"],
                   help="network timed by 'bench infer' (liu2018) or recipe timed by 'bench train' (default liu2018)")
    p.add_argument("--steps", type=int, default=60, help="train: steps of the main stage per timing")
    p.add_argument("--threads", default="1,2", help="train: comma-separated thread counts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch", type=int, default=32, help="render batch size")
    p.add_argument("--size", type=int, default=64, help="synth image size")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("reproduce", help="train and score a paper's ablation table (results.json, results.md)")
    p.add_argument("paper", choices=list(REPRODUCTIONS))
    p.add_argument("--out", required=True, help="run folder (phase checkpoints are reused when present)")
    p.add_argument("--profile", default="quick", choices=["quick", "standard", "full"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE",
                   help="override a train./eval./baselines. config field (repeatable)")
    p.add_argument("--no-baselines", action="store_true", help="skip the mean-face / oracle / landmark-fit rows")
    p.add_argument("--seeds", type=_int_list, help="comma-separated training seeds "
                                                   "(default: the profile's; standard trains 0,1,2)")
    p.add_argument("--liu", help="gao2020, sir: the Liu et al. row's phase3.pt or reproduce-liu2018 folder "
                                 "(default: the committed book/artifacts/liu2018-quick, else -standard)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("artifacts", help="export / verify the book's committed model-only checkpoints (book/artifacts)")
    p.add_argument("action", choices=["export", "verify"])
    p.add_argument("name", help="artifact name, e.g. liu2018-quick")
    p.add_argument("--run-dir", help="export: the run folder whose *.pt to export")
    p.add_argument("--cmdline", help="export: the command that produced the run folder (recorded)")
    p.add_argument("--skip", action="append", default=[], metavar="SUBFOLDER",
                   help="export: leave this sub-folder's checkpoints out, e.g. seed1 (repeatable)")
    p.set_defaults(func=_cmd_artifacts)

    p = sub.add_parser("photo", help="your own photo to a 3D face: dlib landmarks, a 3DMM fit, Liu et al.'s shape "
                                     "(needs facelab[photo]; the 68-point model is non-commercial, iBUG 300-W)",
                       description="Detect the faces in a photo with dlib, fit the 3D morphable model to dlib's 68 "
                                   "landmarks, colour the mesh from the photo and run Liu et al.'s network on the "
                                   "aligned crop. Writes face.obj, overlay.png and render.png per face (face_0.obj, "
                                   "... when there are several). Needs the photo extra: pip install 'facelab[photo]'. "
                                   "Licence: dlib's 68-point landmark model is trained on the iBUG 300-W data set, "
                                   "whose licence excludes commercial use. Exit code 2 when no face is found.")
    p.add_argument("image", metavar="IMAGE", help="the photo (any format Pillow reads)")
    p.add_argument("--out", required=True, help="output folder (face.obj, overlay.png, render.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object: per face the detected and fitted "
                                                       "landmarks (px), their mean distance and the Liu shape's distance from the mean face")
    p.add_argument("--largest", action="store_true", help="only the face with the largest detection box")
    p.add_argument("--detector", default="hog", choices=["hog", "cnn"], help="dlib's HOG detector (fast) or its CNN detector")
    p.add_argument("--model", metavar="PATH", help="morphable model to fit (.npz of MorphableModel.save, BFM .mat/.h5, "
                                                   "SFM .bin, FLAME .pkl) with 68 landmark vertices; default SynthFaces")
    p.add_argument("--liu", metavar="PHASE3", help="Liu et al.'s checkpoint (default book/artifacts/liu2018-quick/phase3.pt)")
    p.add_argument("--no-liu", action="store_true", help="skip Liu et al.'s network")
    p.add_argument("--min-score", type=float, help="drop detections scoring below this (default: hog 0.5, cnn 0)")
    p.set_defaults(func=_cmd_photo)

    p = sub.add_parser("landmarks", help="dlib's 68 landmarks of every photo in a folder -> its landmarks.json "
                                         "(needs facelab[photo]; the 68-point model is non-commercial, iBUG 300-W)",
                       description="Walk ROOT (identity, LFW or MICC folders; hidden folders left out), detect the "
                                   "faces of every .jpg/.jpeg/.png/.bmp with dlib, keep the largest and write its 68 "
                                   "iBUG landmarks to the sidecar that ImageFolderIdentities, LFWFolder and MICCVideos "
                                   "read, plus landmarks_report.json beside it (photos without a face, unreadable, "
                                   "with several faces). Licence: dlib's 68-point landmark model is trained on the "
                                   "iBUG 300-W data set, whose licence excludes commercial use. Exit code 2 when no "
                                   "photo or no face is found, or the photo extra is missing.")
    p.add_argument("root", metavar="ROOT", help="the photo folder (e.g. CASIA-WebFace: ROOT/<identity>/<image>.jpg)")
    p.add_argument("--out", metavar="FILE", help="the sidecar to write (default ROOT/landmarks.json; keys relative to ROOT)")
    p.add_argument("--detector", default="hog", choices=["hog", "cnn"], help="dlib's HOG detector (fast) or its CNN detector")
    p.add_argument("--on-no-face", default="skip", choices=["skip", "raise"],
                   help="a photo without a face is left out and listed, or stops the run")
    p.add_argument("--on-bad-image", default="skip", choices=["skip", "raise"],
                   help="an unreadable file is left out and listed, or stops the run")
    p.add_argument("--min-score", type=float, help="drop detections scoring below this (default: hog 0.5, cnn 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_landmarks)

    p = sub.add_parser("book", help="teacher mode: student versions of the chapters, auto-checked exercises")
    book = p.add_subparsers(dest="action", required=True)
    b = book.add_parser("student", help="write copies with the solutions stubbed out and no outputs")
    b.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="chapters or folders (default book/)")
    b.add_argument("--out", required=True, help="output folder")
    b.set_defaults(func=_cmd_book)
    b = book.add_parser("check", help="run each exercise's solution and check cells; PASS/FAIL table, exit 1 on a FAIL")
    b.add_argument("notebook", metavar="ANSWER", help="the answered notebook (.ipynb)")
    b.add_argument("--against", help="take the check cells from this notebook (e.g. the original chapter)")
    b.add_argument("--timeout", type=float, default=60.0, help="seconds per exercise")
    b.set_defaults(func=_cmd_book)

    from facelab.eval_cli import add_eval_parser

    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"facelab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
