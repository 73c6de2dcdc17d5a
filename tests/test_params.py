"""AnalysisParams: every analysis parameter defined once; the key, the CLI options and the README come from it."""

import argparse
import json
from dataclasses import fields

import numpy as np
import pytest

from topotrace.analysis import params as ap
from topotrace.analysis.params import AnalysisParams

# The cache key of the default analysis as analysis version 12 wrote it before AnalysisParams (keys in this order):
# a cache made then must still match.
DEFAULT_KEY = ('{"analysis_version": 12, "probe_set": "heldout", "measure": null, "layout_methods": null, '
               '"default_layout": null, "n_bins": 5, "bins": "snapshot", "alpha": 0.05, "grid": 128, '
               '"min_map_fill": 0.4, "random_state": 0, "cka_max_samples": 512, "layout_features": "class NAPs at '
               'the last snapshot", "metric": "cosine", "n_boot": 1000, "dormant_tau": 0.025, "ece_bins": 15, '
               '"n_boot_trends": 200}')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    ap.add_options(parser)
    return parser


def test_default_key_is_the_one_written_before():
    """The params attribute of the default run: same keys, order and values (the JSON text, byte for byte)."""
    assert json.dumps(AnalysisParams().key()) == DEFAULT_KEY
    assert AnalysisParams().key_json() == json.dumps(json.loads(DEFAULT_KEY), sort_keys=True)


def test_every_field_has_a_help_text_and_a_check_that_runs():
    """Each field: help text, callable check; the defaults pass their own checks."""
    for f in fields(AnalysisParams):
        assert f.metadata["help"] and callable(f.metadata["check"]), f.name
        f.metadata["check"](f.name, f.default)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"n_bins": 0}, ValueError, r"The 'n_bins' parameter must be an int >= 1\. Got 0 instead\."),
    ({"n_bins": 2.5}, TypeError, r"'n_bins' parameter must be an int >= 1\. Got float 2\.5"),
    ({"dormant_tau": -1}, ValueError, r"'dormant_tau' parameter must be a number >= 0"),
    ({"dormant_tau": float("nan")}, ValueError, "'dormant_tau' parameter"),
    ({"bins": "quantile"}, ValueError, r"'bins' parameter must be one of \['snapshot', 'pooled'\]"),
    ({"layout_methods": "pca"}, TypeError, "'layout_methods' parameter must be a list of method names"),
    ({"layout_methods": ["pca", "tnse"]}, ValueError, r"must list methods among \['pca', .*Got 'tnse'"),
    ({"alpha": 1.5}, ValueError, r"'alpha' parameter must be a number >= 0 and < 1"),
    ({"metric": "manhattan"}, ValueError, "'metric' parameter must be one of"),
    ({"probe_set": ""}, TypeError, "'probe_set' parameter must be a non-empty str"),
    ({"n_bootstrap": 5}, TypeError, r"Unknown analysis parameter 'n_bootstrap'\. Available: \['probe_set'"),
])
def test_bad_values_are_refused_in_one_line(kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        AnalysisParams.make(**kwargs)
    assert "\n" not in str(err.value)


def test_numpy_numbers_become_python_numbers_and_none_keeps_the_default():
    p = AnalysisParams.make(n_bins=np.int64(3), dormant_tau=np.float32(0.5), measure=None, layout_methods=["pca"])
    assert type(p.n_bins) is int and p.n_bins == 3 and type(p.dormant_tau) is float and p.dormant_tau == 0.5
    assert p.layout_methods == ("pca",) and p.key()["layout_methods"] == ["pca"]
    assert AnalysisParams.make(p, n_bins=None).n_bins == 3


def test_dask_task_round_trip():
    """to_dict / from_dict (the Dask task's parameters, through JSON) give the same parameters."""
    p = AnalysisParams(probe_set="train", measure="max_prob", layout_methods=("pca", "som"), n_bins=3,
                       bins="pooled", dormant_tau=0.1)
    assert AnalysisParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert AnalysisParams.from_dict(p.key()) == p  # the key's analysis_version is not a field


def test_cli_options_are_generated_from_the_fields():
    """One option per field with an option; from_args builds the checked params; cli_options repeats them."""
    with_option = {f.name: f.metadata["option"] for f in fields(AnalysisParams) if f.metadata["option"]}
    assert with_option == {"probe_set": "--probe-set", "measure": "--measure", "layout_methods": "--layouts",
                           "n_bins": "--bins", "dormant_tau": "--dormant-tau"}
    parser = _parser()
    args = parser.parse_args([])
    assert not ap.options_given(args) and ap.from_args(args) == AnalysisParams()
    args = parser.parse_args(["--bins", "3", "--layouts", "pca, som", "--dormant-tau", "0.1", "--measure", "margin"])
    assert ap.options_given(args)
    p = ap.from_args(args)
    assert (p.n_bins, p.layout_methods, p.dormant_tau, p.measure) == (3, ("pca", "som"), 0.1, "margin")
    again = ap.from_args(parser.parse_args(ap.cli_options(p.key()).split()))
    assert again == p
    help_text = parser.format_help()
    assert "--dormant-tau TAU" in help_text and "(default: 0.025)" in help_text and "--layouts LAYOUTS" in help_text


@pytest.mark.parametrize(("argv", "match"), [
    (["--bins", "0"], r"The 'n_bins' parameter must be an int >= 1"),
    (["--bins", "five"], r"The '--bins' option \(number of confidence bins\): expected an int, e\.g\. 5; got 'five'"),
    (["--dormant-tau", "x"], r"The '--dormant-tau' option .*expected a number"),
    (["--layouts", "pca,tnse"], r"Unknown layout method 'tnse' for '--layouts'\. Available: \['pca'"),
    (["--layouts", ","], "must name at least one layout method"),
])
def test_bad_options_are_refused_in_one_line(argv, match):
    with pytest.raises(ValueError, match=match) as err:
        ap.from_args(_parser().parse_args(argv))
    assert "\n" not in str(err.value)


def test_readme_parameter_list_names_every_parameter():
    lines = ap.describe(AnalysisParams(n_bins=3).key())
    assert len(lines) == len(fields(AnalysisParams))
    assert any(line.split()[:2] == ["n_bins", "3"] and "confidence bins" in line for line in lines)
    assert any(line.split()[:2] == ["layout_methods", "default"] for line in lines)
