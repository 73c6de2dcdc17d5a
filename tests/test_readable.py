"""Words a reader cannot misread (#23 item 4): terminal tables at 80 columns, chart titles in their card width,
definitions on the page where a measure or glyph appears, no library warning on the terminal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from topotrace.analysis.findings import Finding, RunEffect
from topotrace.cli import main
from topotrace.cmd_analyze import beyond_table, findings_tables
from topotrace.cmd_atlas import atlas_table
from topotrace.cmd_compare import side_by_side_table
from topotrace.cmd_info import layers_table
from topotrace.cmd_study import print_study_findings
from topotrace.instrument.store import LayerSpec
from topotrace.instrument.synthetic import write_synthetic_store

# Layer names as real models have them: short, dotted, and long (25 characters).
LAYERS = ("hidden1", "conv2", "encoder.layers.11.mlp.fc2")
CLAIMS = ("stronger_with_time", "more_distinct_with_time", "stronger_with_confidence",
          "more_distinct_with_confidence")
VERDICTS = ("does not hold in this run", "negligible in this run", "holds in this run", "not supported")


def _finding(layer: str, claim: str, k: int, n_runs: int = 1) -> Finding:
    """A finding with the widest numbers the tables show (tiny effects in e-notation, a long verdict)."""
    steps = np.array([0, 98, 1000])
    curve = np.array([0.259, 0.131, 0.262])
    measure = "" if claim.endswith("time") else "logit_margin"
    runs = [RunEffect(f"seed {i}", -1.234e-4, -2.345e-4, 9.87e-5) for i in range(n_runs)]
    return Finding(layer, claim, measure, -1.234e-4, -2.345e-4, 9.87e-5, n_runs, VERDICTS[k % len(VERDICTS)], "",
                   runs, steps, curve, np.zeros((3, 2)), np.zeros((n_runs, 3)),
                   course="dips then recovers" if measure == "" else "", extreme_step=98 if measure == "" else -1,
                   extreme_value=0.131, relative=0.0116)


def _render(renderable, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def _check(text: str, names, width: int = 80) -> None:
    """No truncation mark, no line wider than the terminal, every name whole on one line."""
    assert "…" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for line in lines:  # a table wider than the terminal is cropped at its right: its rows lose their last border
        if line and line[0] in "┏┃┡│└├":
            assert line.rstrip()[-1] in "┓┃┩│┘┤", f"cropped at {width} columns:\n{text}"
    for name in names:
        assert any(name in line for line in lines), f"{name!r} is not printed whole:\n{text}"


def _print(parts, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    for part in parts:
        console.print(part)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100])
def test_findings_tables_fit_80_columns(width):
    """The findings of `analyze` and `study`: one table per claim (layer, effect, interval, verdict), every layer
    name whole, no "…"; each time claim's course under its table, with its trough."""
    found = [_finding(layer, claim, k) for k, (layer, claim) in enumerate(
        (la, c) for la in LAYERS for c in CLAIMS)]
    text = _print(findings_tables(found, "logit_margin"), width)
    _check(text, LAYERS, width)
    for title in ("stronger with time (change)", "more distinct with confidence (partial ρ with logit_margin)"):
        assert title in text
    assert text.count("−1.23e−04") == text.count("−2.35e−04") == text.count("9.87e−05") == len(found)
    short = _print(findings_tables([f for f in found if len(f.layer) < 8], "logit_margin"), width)
    for v in VERDICTS:  # beside short layer names every verdict and interval is on one line
        assert v in short
    assert short.count("−2.35e−04 to 9.87e−05") == 2 * len(CLAIMS)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Course of the mean per-sample strength"))
    assert "  hidden1: dips then recovers (trough 0.131 at step 98), change +1.16 %" in lines[at + 1: at + 3]
    assert sum(line.startswith("Course of the mean per-sample") for line in lines) == 2


def test_study_findings_fit_80_columns():
    """`topotrace study`'s findings across seeds, printed as `analyze` prints one run's."""
    found = [_finding(layer, claim, k, n_runs=3) for k, (layer, claim) in enumerate(
        (la, c) for la in LAYERS for c in CLAIMS)]
    console = Console(width=80, file=io.StringIO(), record=True)
    print_study_findings(console, found)
    text = console.export_text()
    _check(text, LAYERS)
    assert "Findings across 3 runs (confidence: logit_margin)" in text and text.count("−1.23e−04") == len(found)


def test_beyond_table_keeps_its_layer_column():
    """The "Beyond the study" table lost its layer column even at 100 columns: now whole at 80."""
    trends = [Finding(layer, claim, m, 2.87, 2.41, 3.17, 1, "does not hold in this run", "", [], np.zeros(3),
                      np.zeros(3), np.full((3, 2), np.nan), np.zeros((1, 3)))
              for layer in LAYERS for claim, m in (("dormant_share_grows", ""), ("nc1_falls", ""))]
    trends.append(Finding("", "ece_rises_after_loss_minimum", "temp_prob_cv", 0.01, -0.02, 0.04, 1,
                          "does not hold in this run", "", [], np.zeros(3), np.zeros(3), np.full((3, 2), np.nan),
                          np.zeros((1, 3))))
    for width in (80, 100):
        text = _render(beyond_table(trends), width)
        _check(text, (*LAYERS, "(run)"), width)
        assert text.count("2.41") == text.count("3.17") == 2 * len(LAYERS)


def test_atlas_compare_info_tables_fit_80_columns():
    """`atlas`, `compare` and `info`: layer and study names whole, no "…"."""
    cell = {"effect": 0.0123, "verdict": "not supported"}
    atlas = {"name": "default", "seeds": [0, 1, 2], "claims": list(CLAIMS), "entries": [
        {"study": "mnist1d_transformer", "layers": [
            {"layer": name, "relative_depth": 0.5, "claims": {c: cell for c in CLAIMS}} for name in LAYERS]},
        {"study": "digits_cnn", "layers": [{"layer": "conv1", "relative_depth": 1 / 3, "claims": {}}]}]}
    text = _render(atlas_table(atlas))
    _check(text, (*LAYERS, "mnist1d_transformer", "digits_cnn", "conv1"))
    assert text.count("0.0123") == 4 * len(LAYERS)

    labels = ["lr-0.1", "lr-0.01", "lr-0.001"]
    rows = [{"layer": name, "claim_text": "more distinct with confidence", "cells": [
        {"missing": "", "effect": "−0.356", "interval": "−0.591 to −0.0887", "verdict": "does not hold in this run"},
        {"missing": "no such layer", "effect": "", "interval": "", "verdict": ""},
        {"missing": "", "effect": "0.48", "interval": "0.461 to 0.498", "verdict": "holds in this run"}]}
        for name in LAYERS]
    _check(_render(side_by_side_table(rows, labels)), (*LAYERS, *labels))

    specs = [LayerSpec(name, 4096, "token_mean", (4096, 7, 7)) for name in LAYERS]
    _check(_render(layers_table(specs)), LAYERS)


def test_analyze_and_info_print_readable_at_80_columns(tmp_path, monkeypatch, capsys):
    """The commands themselves with COLUMNS=80: no "…" anywhere, every layer name whole."""
    store = write_synthetic_store(tmp_path / "run" / "store.h5", n_snapshots=4, layer_sizes=(12, 8), n_classes=3,
                                  per_class=8)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["analyze", str(store.parent), "--layouts", "pca"]) == 0
    assert main(["info", str(store.parent)]) == 0
    _check(capsys.readouterr().out, ("layer0", "layer1"))
