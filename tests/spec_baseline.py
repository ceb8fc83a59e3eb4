"""Every spec shipped before graphs landed (configs/, tests/, the README), measured: its parameter
count and first-epoch loss on a few samples. tests/test_spec_baseline.py measures them again with
this code and compares them with tests/spec_baseline.json, which the code before graphs wrote:

    cd /tmp/base && TF_CPP_MIN_LOG_LEVEL=2 python /work/wt-i19b/tests/spec_baseline.py \
        /work/wt-i19b/tests/spec_baseline.json /work/wt-i19b e925131
    git archive f335c1c | tar -x -C /tmp/main-f335c1c && cd /tmp/main-f335c1c && \
        TF_CPP_MIN_LOG_LEVEL=2 python /work/wt-i19b/tests/spec_baseline.py \
        /work/wt-i19b/tests/spec_baseline.json /work/wt-i19b f335c1c

The dlrun of the working directory measures the specs of the project named second (relative
csv paths name its files). First the code before graphs (e925131, /tmp/base); then, for the
specs that use what came after it (validation_path, targets, test_path, augment), main before
several inputs (f335c1c) fills in: each entry says which code recorded it. The JSON holds each
spec's text, so it is measured again exactly as it was recorded; a spec neither could train
is recorded as skipped, with its first line of output.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

# Whose dlrun is measured: the project in the working directory, not the one beside this file.
sys.path.insert(0, os.getcwd())
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# One epoch on a few samples: the numbers of the first epoch are what must not change.
OVERRIDES = ["training.epochs=1", "data.limit=200", "training.tensorboard=null"]
# keras.datasets' MNIST needs a download; mnist_5k is the same shape, shipped offline.
OFFLINE = {"mnist": "mnist_5k"}
# Not measured, and why.
SKIPPED = {
    "configs/transfer_head.yaml": "its base is a run trained first (runs/transfer-pretrain)",
    "configs/transfer_finetune.yaml": "its base is a run trained first (runs/transfer-pretrain)",
    # Graphs and several inputs: there was nothing to compare them with before.
    "configs/mnist_resnet.yaml": "a graph (residual adds): new with graphs",
    "configs/cancer_two_inputs.yaml": "a graph of two inputs: new with graphs",
    # Code files (docs/code.md): new with them, and they live beside configs/code/ only.
    "docs:name: vit-digits": "imports its code files (configs/code/): new with code files",
}


def readme_key(block: str) -> str:
    """A documentation block by its first line, so that blocks added elsewhere change no key."""
    return f"docs:{block.splitlines()[0][:50].strip()}"


def specs(root: Path) -> dict[str, str]:
    """{where: spec text} for every spec in configs/ and tests/ that trains, and every
    documentation block that is a whole spec (data: and model:)."""
    found = {}
    for path in sorted((root / "configs").glob("*.yaml")):
        text = path.read_text()
        if not path.name.startswith("sweep_"):  # sweep files, not specs
            found[f"configs/{path.name}"] = text
    for path in sorted((root / "tests" / "hostile" / "specs_ok").glob("*.yaml")):
        found[str(path.relative_to(root))] = path.read_text()
    conftest = (root / "tests" / "conftest.py").read_text()
    found["tests/conftest.py:TINY_SPEC"] = re.search(
        r'TINY_SPEC = """\\\n(.*?)"""', conftest, re.S
    )[1]
    from conftest import docs_text

    readme = docs_text()
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        if re.search(r"^data:", block, re.M) and re.search(r"^model:", block, re.M):
            found[readme_key(block)] = block
    return {where: text for where, text in found.items() if where not in SKIPPED}


def measure(text: str, root: Path) -> dict:
    """{params, loss} of one epoch of the spec, or {skipped: why} where it cannot train here."""
    import yaml
    from typer.testing import CliRunner

    from dlrun.cli import app

    dataset = (yaml.safe_load(text).get("data") or {}).get("dataset")
    overrides = list(OVERRIDES)
    if dataset in OFFLINE:
        overrides.append(f"data.dataset={OFFLINE[dataset]}")
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "spec.yaml"
        spec.write_text(text)
        runs = Path(folder) / "runs"
        arguments = ["train", str(spec), "--runs-dir", str(runs)]
        for override in overrides:
            arguments += ["--set", override]
        previous = os.getcwd()
        os.chdir(root)
        try:
            result = CliRunner().invoke(app, arguments)
        finally:
            os.chdir(previous)
        if result.exit_code != 0:
            return {"skipped": (result.output.strip().splitlines() or ["?"])[0][:200]}
        (run,) = [path for path in runs.iterdir() if path.is_dir()]
        metrics = json.loads((run / "metrics.json").read_text())
        history = (run / "history.csv").read_text().splitlines()
        header, first = history[0].split(","), history[1].split(",")
        return {"params": metrics["params"], "loss": float(first[header.index("loss")])}


def main(out: str, root: str, code: str) -> None:
    root = Path(root).resolve()
    recorded = json.loads(Path(out).read_text())["specs"] if Path(out).exists() else {}
    for where, text in specs(root).items():
        if "params" in recorded.get(where, {}):
            continue  # recorded by older code
        recorded[where] = {"text": text, **measure(text, root), "recorded_by": code}
        print(where, {k: v for k, v in recorded[where].items() if k != "text"}, flush=True)
    document = {"overrides": OVERRIDES, "offline": OFFLINE, "skipped": SKIPPED, "specs": recorded}
    Path(out).write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
