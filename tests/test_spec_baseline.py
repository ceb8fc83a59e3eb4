"""Every spec shipped before graphs gives the same parameter count and first-epoch loss with
graphs and several inputs: tests/spec_baseline.json, recorded by the older code (see
tests/spec_baseline.py for how), measured again here. One epoch on 200 samples each; about
40 s of CPU for all of them (2 minutes of wall time on a busy 2-core machine)."""

import json
from pathlib import Path

import pytest
from spec_baseline import measure

from conftest import ROOT

RECORDED = json.loads((Path(__file__).parent / "spec_baseline.json").read_text())["specs"]
MEASURED = {where: entry for where, entry in RECORDED.items() if "params" in entry}


def test_the_baseline_covers_the_shipped_specs():
    from spec_baseline import specs

    assert set(specs(ROOT)) <= set(RECORDED)  # a new spec: record it (see spec_baseline.py)
    assert len(MEASURED) >= 14


@pytest.mark.parametrize("where", sorted(MEASURED))
def test_a_spec_trains_as_it_did_before_graphs(where):
    recorded = MEASURED[where]
    now = measure(recorded["text"], ROOT)
    assert now.get("params") == recorded["params"], now
    assert now["loss"] == pytest.approx(recorded["loss"], abs=1e-5)
