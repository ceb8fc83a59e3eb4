"""configs/transfer_*.yaml end to end on a few samples: the script behind the README table."""

import importlib.util
import re
import sys

from conftest import CONFIGS, ROOT
from dlrun.spec.loading import load_spec


def test_every_transfer_config_is_a_valid_spec():
    names = sorted(p.name for p in CONFIGS.glob("transfer_*.yaml"))
    assert names == [
        "transfer_finetune.yaml",
        "transfer_head.yaml",
        "transfer_pretrain.yaml",
        "transfer_scratch.yaml",
    ]
    finetune = load_spec(CONFIGS / "transfer_finetune.yaml")
    assert finetune.model.base.until == "features" and finetune.training.finetune.epochs == 20
    assert load_spec(CONFIGS / "transfer_scratch.yaml").data.dataset == "digits"


def test_the_transfer_configs_train_and_fill_the_table(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("transfer_bench", ROOT / "bench" / "transfer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "table.md"
    argv = ["transfer.py", "--quick", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 0
    text = out.read_text()
    assert "Command: python bench/transfer.py --quick;" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| 3 per class |")]
    scores = [float(cell) for cell in re.findall(r"\d\.\d{4}", row)]
    assert len(scores) == 4 and all(0.0 <= score <= 1.0 for score in scores)
    runs = sorted(p.name.rsplit("-", 2)[0] for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert runs == ["transfer-finetune", "transfer-head", "transfer-pretrain", "transfer-scratch"]
    assert (tmp_path / "runs" / "features-30.npz").is_file()
