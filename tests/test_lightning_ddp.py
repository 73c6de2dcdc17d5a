"""The Lightning callback under torchrun DDP (2 gloo ranks on the CPU) with shard="ddp": every rank its share."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bench.launch import TORCHRUN, torchrun
from topotrace.instrument.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # tests/conftest.py; make test-fast leaves these out

# Only the child imports Lightning (and torch): importing them here too would cost this process as long again.
if importlib.util.find_spec("lightning") is None:
    pytest.skip("PyTorch Lightning is not installed", allow_module_level=True)

CHILD = Path(__file__).with_name("_lightning_ddp_child.py")
SHARDS = ["store.shard-00-of-02.h5", "store.shard-01-of-02.h5"]


def _probe_x():
    """The child's probe inputs, from the same generator."""
    return np.random.default_rng(7).standard_normal((30, 6)).astype(np.float32)


def test_lightning_ddp_sharded_recording(tmp_path):
    """A Lightning fit on 2 ranks: both shards and the combined store, whose last snapshot is the final model's."""
    if not TORCHRUN.exists():
        pytest.skip("torchrun not found next to the Python interpreter")
    out = tmp_path / "run"
    out.mkdir()
    done = torchrun(CHILD, str(out), timeout=180)
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stderr[-4000:]}"

    assert sorted(p.name for p in out.glob("*.h5")) == ["store.h5", *SHARDS]
    params = [dict(np.load(out / f"params_rank{r}.npz", allow_pickle=False)) for r in (0, 1)]
    for name in params[0]:  # DDP kept the ranks' weights in step
        np.testing.assert_array_equal(params[0][name], params[1][name])
    p = params[0]
    x = _probe_x().astype(np.float64)
    hidden = np.maximum(x @ p["net_0_weight"].T.astype(np.float64) + p["net_0_bias"], 0.0)  # net.1, ReLU
    logits = hidden @ p["net_2_weight"].T.astype(np.float64) + p["net_2_bias"]  # net.2, the logits

    with Store(out / "store.h5") as st:
        assert [s.name for s in st.shards] == SHARDS
        for shard in st.shards:
            with Store(shard) as s:
                assert len(s.labels("heldout")) == 15  # 6 probe batches of 5: 3 whole batches per rank
                np.testing.assert_array_equal(s.steps, [0, 2, 4, 6, 8])
        np.testing.assert_array_equal(st.steps, [0, 2, 4, 6, 8])  # every(2) up to max_steps=8
        np.testing.assert_array_equal(st.labels("heldout"), np.arange(30) % 3)
        assert list(st.layers) == ["net.1", "net.2"]
        acts = st.acts("heldout", "net.1", -1, dtype=None)
        assert acts.dtype == np.float16 and acts.shape == (30, 16)
        np.testing.assert_allclose(acts.astype(np.float64), hidden.astype(np.float16).astype(np.float64),
                                   rtol=1e-3, atol=1e-3)
        out_acts = st.acts("heldout", "net.2", -1, dtype=None)
        np.testing.assert_allclose(out_acts.astype(np.float64), logits.astype(np.float16).astype(np.float64),
                                   rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(st.logits("heldout")[-1], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(st.pred("heldout")[-1], logits.argmax(1))
        # the first snapshot is the untrained model, not the final one
        assert not np.allclose(st.logits("heldout")[0], logits, rtol=1e-3, atol=1e-3)
