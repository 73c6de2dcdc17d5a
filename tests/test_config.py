"""Configs: defaults, shipped TOML files, and clear errors for bad settings."""

import tomllib
from pathlib import Path

import pytest

from topotrace.config import DEFAULTS, MODEL_KINDS, default_layers, load_config, to_toml

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    """Every shipped config is valid."""
    cfg = load_config(path)
    assert set(cfg) == set(DEFAULTS)


def test_toml_roundtrip(tmp_path):
    """The config copy written into a run folder reads back to the same settings."""
    cfg = load_config(CONFIGS[0], {"data": {"path": 'we"ird\\name'}})
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    assert tomllib.loads(to_toml(cfg)) == cfg
    assert load_config(tmp_path / "c.toml") == cfg


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("[train]\nepochz = 3\n", ValueError, r"Unknown setting 'train.epochz'. Allowed in \[train\]: \['batch_size'"),
        ("[trian]\nepochs = 3\n", ValueError, r"Unknown config section \[trian\]"),
        ('[train]\nepochs = "3"\n', TypeError, r"'train.epochs' must be of type int. Got '3'"),
        ("[train]\nepochs = 0\n", ValueError, r"'train.epochs' setting must be >= 1. Got 0"),
        ('[record]\nschedule = "sometimes"\n', ValueError, r"one of \('log', 'every', 'epoch'\)"),
        ("[train\n", ValueError, "not valid TOML"),
    ],
)
def test_bad_settings(tmp_path, text, error, message):
    """Bad settings fail before any work, naming the setting and what is allowed."""
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(error, match=message):
        load_config(tmp_path / "c.toml")


def test_mc_dropout_setting_checked():
    """record.mc_dropout must be >= 0 and needs model.dropout > 0; the shipped digits_mc config passes."""
    path = Path(__file__).resolve().parents[1] / "configs" / "digits_mc.toml"
    cfg = load_config(path)
    assert cfg["record"]["mc_dropout"] == 20 and cfg["model"]["dropout"] > 0
    with pytest.raises(ValueError, match="needs dropout in the model"):
        load_config(path, {"model": {"dropout": 0.0}})
    with pytest.raises(ValueError, match="'record.mc_dropout' setting must be an int >= 0"):
        load_config(path, {"record": {"mc_dropout": -1}})


@pytest.mark.parametrize("path", [p for p in CONFIGS if load_config(p)["model"]["kind"] != "mlp"], ids=lambda p: p.name)
def test_model_kinds_roundtrip_and_resume_check(tmp_path, path):
    """A config of another model kind, written into a run folder, reads back to the same settings (what --resume
    compares), with the kind's parameters and recorded layers; a config without [model] kind is the MLP."""
    cfg = load_config(path)
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg
    assert set(cfg["model"]) == {"kind", *MODEL_KINDS[cfg["model"]["kind"]]}
    assert cfg["record"]["layers"] == default_layers(cfg["model"])
    old = tmp_path / "old.toml"  # a run folder's config.toml from before model.kind existed
    old.write_text('[model]\nhidden = [16]\ndropout = 0.0\nbatchnorm = false\n[record]\nlayers = ["hidden1"]\n')
    assert load_config(old)["model"] == {"kind": "mlp", "hidden": [16], "dropout": 0.0, "batchnorm": False}
