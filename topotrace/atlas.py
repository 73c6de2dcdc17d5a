"""The atlas: the study's four claims over architectures and data sets, laid out by relative depth.

``topotrace atlas CONFIG CONFIG ... --seeds 0,1,2 --name NAME`` makes one config study per configuration (each
resumable like ``topotrace study``) inside one folder, then one page and one file over all of them::

    <out_dir>/<name>/
        atlas.json         what the atlas is (configs, seeds; written first) and, when done, its numbers
        <config stem>/     one config study per configuration (study.json, seed-<k>/, findings.json, report.html)
        index.html         the matrix of verdicts and the effects against relative depth

Relative depth of a recorded layer: the number of weight layers (``Linear`` and convolution modules, in the
model's registration order, which is its forward order for every built-in model) up to and including the
layer's output, divided by the model's total. The output layer has depth 1; the first hidden layer of an MLP
with hidden layers [128, 64] has 1/3.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from .runfolder import INDEX_FILE, RunFolder

ATLAS_FILE = "atlas.json"
FORMAT = "topotrace-atlas"


def relative_depths(cfg: dict, layers: Sequence[str]) -> dict[str, float]:
    """Each recorded layer's relative depth in the model ``cfg`` builds (see the module's docstring).

    Args:
        cfg: a run configuration (:func:`topotrace.config.load_config`).
        layers: recorded layer names (``named_modules()`` names).

    Returns:
        ``{layer: depth in (0, 1]}``.
    """
    from torch import nn

    from .train import meta_model

    model = meta_model(cfg)
    names = [name for name, _ in model.named_modules()]
    weights = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    out = {}
    for layer in layers:
        inside = [i for i, w in enumerate(weights) if w == layer or w.startswith(layer + ".")]
        if inside:
            count = inside[-1] + 1
        else:  # a module without weights (an activation): the weight layers registered before it
            pos = names.index(layer) if layer in names else len(names)
            count = sum(1 for w in weights if names.index(w) < pos)
        out[layer] = count / max(len(weights), 1)
    return out


def primary_cells(found: list, layer: str) -> dict[str, dict]:
    """The four claims of one layer (the confidence claims for the primary measure, listed first in ``found``).

    Returns:
        ``{claim: the finding as in findings.json, without its rule text}``.
    """
    cells: dict[str, dict] = {}
    for f in found:
        if f.layer == layer and f.claim in CLAIM_ORDER and f.claim not in cells:
            cells[f.claim] = {k: v for k, v in f.to_json().items() if k not in ("rule", "layer", "claim")}
    return cells


def describe(configs: Sequence[str], seeds: Sequence[int], name: str) -> dict:
    """The atlas's description, written first to ``atlas.json`` (its numbers are added when it is done)."""
    return {"format": FORMAT, "name": name, "seeds": list(seeds), "configs": [str(c) for c in configs]}


def check_atlas_folder(path: Path, desc: dict) -> bool:
    """Whether the atlas at ``path`` exists already as this atlas (same configs and seeds).

    Raises:
        FileExistsError: ``path`` is something else: a file, a link, a folder that is no atlas, another atlas.
    """
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} exists and is not a topotrace atlas folder; choose another --name.")
    if not path.exists():
        return False
    try:
        old = json.loads((path / ATLAS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        raise FileExistsError(f"{path} exists and is not a topotrace atlas (no readable {ATLAS_FILE}); choose "
                              "another --name.") from None
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise FileExistsError(f"{path}/{ATLAS_FILE} is not a topotrace atlas description; choose another --name.")
    if old.get("configs") != desc["configs"] or old.get("seeds") != desc["seeds"]:
        raise FileExistsError(f"{path} holds an atlas of other configs or seeds ({old.get('configs')}, seeds "
                              f"{old.get('seeds')}); run it with the same configs and seeds to continue it, or "
                              "choose another --name.")
    return True


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON through a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.writing")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)


def atlas_entry(config: str, cfg: dict, study, found: list, timings: dict[str, float]) -> dict:
    """One configuration's part of ``atlas.json``: what it is, its layers' cells, its seeds' accuracy, timings.

    Args:
        config: the config file as given.
        cfg: its configuration.
        study: its study (:class:`topotrace.studies.Study`).
        found: the study's findings (:func:`topotrace.analysis.findings.findings`).
        timings: seconds spent per stage.
    """
    import numpy as np

    from .train import final_metrics

    layers = list(dict.fromkeys(f.layer for f in found))
    depths = relative_depths(cfg, layers)
    accuracy = [final_metrics(RunFolder(study.seed_dir(s)).store)["heldout"]["accuracy"] for s in study.seeds]
    stem = study.path.name
    return {
        "config": config,
        "study": stem,
        "report": RunFolder(Path(stem)).report.as_posix(),
        "architecture": cfg["model"].get("kind", "mlp"),
        "data": cfg["data"]["source"],
        "heldout_accuracy": {"mean": float(np.mean(accuracy)), "seeds": [float(a) for a in accuracy]},
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "layers": [{"layer": layer, "relative_depth": depths[layer], "claims": primary_cells(found, layer)}
                   for layer in sorted(layers, key=lambda name: depths[name])],
    }


def run_atlas(configs: Sequence[str], seeds: Sequence[int], name: str, out_dir: str, epochs: int | None,
              study_one, console) -> dict:
    """Make (or continue) every config study of the atlas, then ``atlas.json`` and ``index.html``.

    Every config is read and checked before anything is written.

    Args:
        configs: config files, in the order of the atlas.
        seeds: seeds of every study.
        name: the atlas's name: its folder is ``out_dir/name``.
        out_dir: the runs folder.
        epochs: override ``train.epochs`` of every config (small atlases for tests).
        study_one: makes one config study: ``study_one(study, made, timings) -> findings`` (the command's
            :func:`topotrace.cmd_study.config_study` with its console and options).
        console: where lines go (``console.print``).

    Returns:
        The contents of ``atlas.json``.
    """
    from .config import load_config
    from .studies import create_or_resume
    from .train import check_creatable, check_run_config

    path = Path(out_dir) / name
    overrides: dict = {"run": {"out_dir": str(path)}}
    if epochs is not None:
        overrides["train"] = {"epochs": epochs}
    cfgs = [load_config(c, copy.deepcopy(overrides)) for c in configs]
    stems = [Path(c).stem for c in configs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"Two configs share the file name {dup!r}; each config's study is a folder named after "
                         "its file, so give configs with distinct file names.")
    for cfg in cfgs:
        check_run_config(cfg)
    desc = describe(configs, seeds, name)
    existed = check_atlas_folder(path, desc)
    if not existed:
        check_creatable(path)
        path.mkdir(parents=True)
        write_json(path / ATLAS_FILE, desc)
    entries = []
    for config, stem, cfg in zip(configs, stems, cfgs):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        console.print(f"atlas {name}: {config} ({stems.index(stem) + 1} of {len(stems)})")
        study, made = create_or_resume(path / stem, stem, seeds, cfg)
        found = study_one(study, made, timings)
        timings["total"] = time.perf_counter() - t0
        entries.append(atlas_entry(config, cfg, study, found, timings))
    from .analysis.findings import RULE
    from .report_templates.words import DEPTH_RULE

    atlas = desc | {"claims": list(CLAIM_ORDER), "rule": RULE, "depth_rule": DEPTH_RULE, "entries": entries}
    from .report_templates.atlas import build_atlas

    build_atlas(atlas, path / INDEX_FILE)
    write_json(path / ATLAS_FILE, atlas)
    return atlas


CLAIM_ORDER = ("stronger_with_time", "more_distinct_with_time", "stronger_with_confidence",
               "more_distinct_with_confidence")
