"""facelab.config with nested configs: every recipe config holds its loop options as ``train``.

Dotted overrides (``train.lr=0.1``), the short form of a nested key (``lr=0.1``), unknown keys,
JSON round trips, dicts saved before the loop options were nested (the committed artifacts'),
and None meaning "the profile's value" inside the nested config.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from facelab.config import apply_overrides, from_dict, known_keys, replace_fields, resolve_profile, to_dict
from facelab.reproduce.artifacts import ARTIFACTS_DIR
from facelab.train.gao2020 import Gao2020TrainConfig
from facelab.train.liu2018 import Liu2018TrainConfig
from facelab.train.recipes import RECIPES
from facelab.train.regressor import RegressorTrainConfig
from facelab.train.sir import SIRTrainConfig
from facelab.train.trainer import LoopConfig, TrainConfig

RECIPE_CONFIGS = (Liu2018TrainConfig, Gao2020TrainConfig, SIRTrainConfig, RegressorTrainConfig)


@dataclass
class Inner:
    lr: float = 0.1
    sizes: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    steps: int = 3
    depth: int = 2
    train: Inner = field(default_factory=Inner)


@dataclass
class Shadowing:
    """An outer field of the same name as a nested one: the short form names the outer one."""

    lr: float = 1.0
    train: Inner = field(default_factory=Inner)


# ------------------------------------------------------------- overrides
def test_dotted_override_sets_the_nested_field():
    cfg = apply_overrides(Outer(), ["train.lr=0.5", "train.sizes=4,5", "steps=7"])
    assert cfg == Outer(steps=7, train=Inner(lr=0.5, sizes=(4, 5)))
    liu = apply_overrides(Liu2018TrainConfig(), ["train.batch_size=8", "train.seed=3", "phase_steps=3,2,1"])
    assert (liu.train.batch_size, liu.train.seed, liu.phase_steps) == (8, 3, (3, 2, 1))
    assert liu.train.weight_decay == 1e-4 and liu.train.diagnose_every == 25  # the rest stays the profile's


def test_short_key_is_the_nested_field():
    assert apply_overrides(Outer(), ["lr=0.5"]).train.lr == 0.5
    for cls in RECIPE_CONFIGS:
        short, dotted = apply_overrides(cls(), ["seed=4", "progress=false"]), apply_overrides(
            cls(), ["train.seed=4", "train.progress=false"])
        assert short == dotted and (short.train.seed, short.train.progress) == (4, False)
    assert apply_overrides(Gao2020TrainConfig(), ["lr=0.002"]).train.lr == 0.002
    # a field of the outer config wins over the nested one of the same name
    shadowed = apply_overrides(Shadowing(), ["lr=0.5"])
    assert (shadowed.lr, shadowed.train.lr) == (0.5, 0.1)
    assert apply_overrides(Shadowing(), ["train.lr=0.5"]).train.lr == 0.5
    # a group's own name is not short for another group's field (Liu's ``data.train``)
    assert apply_overrides(Liu2018TrainConfig(), ["data.train=/photos", "data.kind=imagefolder", "targets=fitted",
                                                  "targets_path=t.npz"]).data.train == "/photos"
    with pytest.raises(ValueError, match=r"--set train: unknown config key"):
        apply_overrides(Liu2018TrainConfig(), ["train=/photos"])


def test_unknown_keys_raise_listing_the_nested_ones():
    with pytest.raises(ValueError, match=r"--set train\.lrr: unknown config key; known keys: steps, depth, "
                                         r"train\.lr, train\.sizes$"):
        apply_overrides(Outer(), ["train.lrr=0.5"])
    with pytest.raises(ValueError, match="--set lrr: unknown config key"):
        apply_overrides(Outer(), ["lrr=0.5"])
    with pytest.raises(ValueError, match="--set train: unknown config key"):  # a whole nested config is no key
        apply_overrides(Outer(), ["train=1"])
    with pytest.raises(ValueError, match=r"train\.batch_sizee: unknown config key; known keys: .*phase_lr, "
                                         r"train\.batch_size, train\.lr, .*train\.diagnose_every"):
        apply_overrides(Liu2018TrainConfig(), ["train.batch_sizee=8"])
    assert "train" not in known_keys(Liu2018TrainConfig) and "train.seed" in known_keys(Liu2018TrainConfig)


def test_bad_nested_values_raise_naming_the_key():
    with pytest.raises(ValueError, match=r"--set train\.batch_size: expected int"):
        apply_overrides(Liu2018TrainConfig(), ["train.batch_size=many"])
    with pytest.raises(ValueError, match=r"train\.batch_size: must be positive"):
        apply_overrides(Liu2018TrainConfig(), ["batch_size=0"])
    with pytest.raises(ValueError, match=r"train\.lr: not used by this recipe \(each phase's rate is phase_lr\)"):
        apply_overrides(Liu2018TrainConfig(), ["lr=0.1"])
    with pytest.raises(ValueError, match=r"train\.batch_size: not used by this recipe"):
        apply_overrides(SIRTrainConfig(), ["train.batch_size=8"])


def test_replace_fields_takes_the_same_keys():
    cfg = replace_fields(Gao2020TrainConfig(), {"seed": 2, "train.log_every": 5, "use_adv": False})
    assert (cfg.train.seed, cfg.train.log_every, cfg.use_adv) == (2, 5, False)
    whole = replace_fields(cfg, {"train": LoopConfig(seed=9)})  # a whole nested config, None: the profile's
    assert (whole.train.seed, whole.train.log_every) == (9, 10)
    with pytest.raises(ValueError, match="seeed: unknown config key"):
        replace_fields(Gao2020TrainConfig(), {"seeed": 2})


# -------------------------------------------------------- profile values
def test_none_in_the_nested_config_is_the_profiles_value():
    mine = LoopConfig(lr=0.1)
    cfg = Gao2020TrainConfig(train=mine)
    assert (cfg.train.lr, cfg.train.ckpt_every, cfg.train.weight_decay) == (0.1, 50, 0.0)
    assert mine.ckpt_every is None  # the caller's object is not filled in
    standard = apply_overrides(Liu2018TrainConfig(profile="standard"), ["train.diagnose_every=3"])
    assert apply_overrides(standard, ["train.diagnose_every=none"]).train.diagnose_every == 100
    assert Liu2018TrainConfig(profile="full").train.diagnose_every == 200


def test_resolve_profile_fills_nested_tables_and_rejects_typos():
    cfg = Outer(train=Inner(lr=None))
    resolve_profile(cfg, {"train": {"lr": 0.25}})
    assert cfg.train.lr == 0.25
    resolve_profile(cfg, {"train": {"lr": 0.5}})
    assert cfg.train.lr == 0.25  # only None is filled
    with pytest.raises(ValueError, match=r"\['lrr'\] are not fields of Inner"):
        resolve_profile(Outer(), {"train": {"lrr": 0.5}})


# -------------------------------------------------------------- from_dict
@pytest.mark.parametrize("cls", RECIPE_CONFIGS)
def test_round_trip_through_json(cls):
    cfg = replace_fields(cls(), {"seed": 5, "train.log_every": 7, "train.progress": False, "out_dir": "runs/x"})
    saved = json.loads(json.dumps(to_dict(cfg)))
    assert saved["_type"] == cls.__name__ and saved["train"]["seed"] == 5 and "seed" not in saved
    assert from_dict(cls, saved) == cfg


def test_from_dict_rebuilds_nested_and_migrates_flat_keys():
    assert from_dict(Outer, {"steps": 4, "train": {"lr": 0.5, "sizes": [3]}}) == Outer(4, 2, Inner(0.5, (3,)))
    assert from_dict(Outer, {"steps": 4, "lr": 0.5, "sizes": [3]}) == Outer(4, 2, Inner(0.5, (3,)))
    assert from_dict(Outer, {"lr": 0.5, "train": {"sizes": [3]}}) == Outer(train=Inner(0.5, (3,)))
    with pytest.raises(ValueError, match="'lr' is given both flat and in 'train'"):
        from_dict(Outer, {"lr": 0.5, "train": {"lr": 0.25}})
    with pytest.raises(ValueError, match="Outer: width: unknown config key"):
        from_dict(Outer, {"width": 3})


def _stage_train_config(cfg, stage: str) -> TrainConfig:
    if isinstance(cfg, Liu2018TrainConfig):
        from facelab.train.liu2018 import STAGES

        return cfg.train_config(STAGES[stage][0], stage)
    return cfg.train_config(stage)


# (artifact, stage checkpoint, recipe config): runs saved with the loop options flat
SAVED_RUNS = [("liu2018-quick", "phase3.pt", Liu2018TrainConfig),
              ("liu2018-standard", "phase3_no_lr.pt", Liu2018TrainConfig),
              ("gao2020-quick", "full/step2.pt", Gao2020TrainConfig), ("sir-quick", "sfm_sir.pt", SIRTrainConfig)]


@pytest.mark.parametrize("artifact, checkpoint, cls", SAVED_RUNS)
def test_committed_flat_recipe_configs_load(artifact, checkpoint, cls):
    """A committed checkpoint's recipe config (flat keys) rebuilds the loop its stage was trained with."""
    ckpt = torch.load(ARTIFACTS_DIR / artifact / checkpoint, map_location="cpu", weights_only=False)
    saved = ckpt["extra"]["recipe"]
    assert "seed" in saved and "train" not in saved  # the layout before the nesting
    cfg = from_dict(cls, saved)
    assert cfg.train.seed == saved["seed"] and cfg.train.device == saved["device"]
    assert cfg.train.log_every == saved["log_every"] and cfg.train.progress == saved["progress"]
    stage = Path(checkpoint).stem
    rebuilt = dataclasses.asdict(_stage_train_config(cfg, stage))
    trained = ckpt["train_config"]
    assert {k: rebuilt[k] for k in trained} == trained  # every option the stage was trained with
    results = json.loads((ARTIFACTS_DIR / artifact / "results.json").read_text())["train_config"]
    flat = results[Path(checkpoint).parts[0]] if cls is Gao2020TrainConfig else results
    assert from_dict(cls, flat).train == cfg.train


# ------------------------------------------------------ the recipe pattern
LOOP_NAMES = {f.name for f in dataclasses.fields(LoopConfig)}


def _flat_loop_fields(cls) -> set[str]:
    """Loop options a recipe config declares at its top level instead of in ``train``."""
    return {f.name for f in dataclasses.fields(cls)} & LOOP_NAMES


def test_loop_config_is_train_config_without_the_stage_fields():
    assert LOOP_NAMES == {f.name for f in dataclasses.fields(TrainConfig)} - {"steps", "out_dir", "profile"}


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_nests_the_loop_and_returns_its_run_folder(name):
    recipe = RECIPES[name]
    assert typing.get_type_hints(recipe.config_class)["train"] is LoopConfig
    assert _flat_loop_fields(recipe.config_class) == set()
    assert typing.get_type_hints(recipe.train)["return"] is Path


def test_flat_loop_field_checker_flags_a_flat_field():
    @dataclass
    class Flat:
        lr: float = 0.1
        seed: int = 0
        depth: int = 2

    assert _flat_loop_fields(Flat) == {"lr", "seed"}
