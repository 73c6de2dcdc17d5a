"""The README's "Recording your own model" snippet runs as written and records what it says it does."""

import re
from pathlib import Path

import numpy as np
import pytest

from topotrace.instrument.store import Store

README = Path(__file__).parent.parent / "README.md"


def _snippet() -> str:
    text = README.read_text("utf-8")
    section = text[text.index("### Recording your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_snippet_runs_and_reaches_the_last_step(tmp_path, monkeypatch):
    """Step 0 is the untrained model, the last scheduled step is total_steps, meta reaches the store, and the
    report is written."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_snippet(), "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    with Store(tmp_path / "runs/mine/store.h5") as st:
        steps = st.steps
        assert steps[0] == 0 and steps[-1] == namespace["total_steps"] == 220
        assert len(steps) == 60 and np.all(np.diff(steps) > 0)
        assert st.meta["seed"] == 0 and "digits" in st.meta["data"]
        assert st.epochs[-1] == 4
        assert st.correct("heldout")[-1].mean() > 0.8  # it learned
    assert (tmp_path / "runs/mine/report.html").stat().st_size > 100_000
