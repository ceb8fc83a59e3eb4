"""keras.io's own examples as dlrun specs with the user's code beside them, against plain Keras.

Each folder under bench/kerasio/ holds one keras.io example (vision, structured_data or
timeseries) as a dlrun spec (spec.yaml) and the example's own Python as a code file: its custom
layers, or its model builder, and a `load` data function giving data of the example's shapes
(nothing can be downloaded here). For each one this script builds

- the example's model in plain Keras, composed in Python the way the example's script does it
  (PLAIN below: its functional code, with the example's layer classes from the code file), and
- the spec's model through dlrun (`dlrun validate`, which builds it and states its count),

and compares their parameter counts. With --train it also trains both for --epochs on the same
data (the code file's `load`) with the spec's optimizer, loss, metrics, batch size and
validation, and reports the test accuracy (or loss) of each. Writes bench/kerasio_results.md.

Usage: python bench/kerasio.py [--train] [--epochs 1] [--only vit,cct] [--out FILE]
       python bench/kerasio.py --rows LOG [--train --epochs N]   (re-render a run's report)
bench/kerasio_rows.jsonl holds the rows of the run that made bench/kerasio_results.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES_DIR = HERE / "kerasio"
STAMP = "%Y-%m-%d %H:%M UTC"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Example:
    folder: str  # under bench/kerasio/
    source: str  # the example in keras-team/keras-io
    what: str  # the user code the spec needs
    cheap: bool = True  # trained by --train (the others take minutes a sample on 2 CPU cores)


PUBLISHED = {  # from keras-io's examples/vision/*.py text and md/*.md model summaries
    "pointnet": "748,979 (md summary)",
    "involution": "13,080 (md summary)",
    "cct": '"0.4 million" (text)',
    "eanet": '"0.3M" (text)',
    "swin": '"152K" (text: 10 classes; its code has 100)',
}


EXAMPLES = {
    "vit": Example(
        "vit",
        "examples/vision/image_classification_with_vision_transformer.py",
        "layers Patches, PatchEncoder; data function",
        cheap=False,
    ),
    "mlp_mixer": Example(
        "mlp_mixer",
        "examples/vision/mlp_image_classification.py",
        "layers Patches, MLPMixerLayer; data function",
    ),
    "fnet": Example(
        "fnet",
        "examples/vision/mlp_image_classification.py",
        "layers Patches, PositionEmbedding, FNetLayer (the example's second model); data function",
    ),
    "gmlp": Example(
        "gmlp",
        "examples/vision/mlp_image_classification.py",
        "layers Patches, gMLPLayer (the example's third model); data function",
    ),
    "cct": Example(
        "cct",
        "examples/vision/cct.py",
        "layers CCTTokenizer, PositionEmbedding, StochasticDepth, SequencePooling; data function",
    ),
    "eanet": Example(
        "eanet",
        "examples/vision/eanet.py",
        "layers PatchExtract, PatchEmbedding, ExternalAttention; data function",
    ),
    "vit_detection": Example(
        "vit_detection",
        "examples/vision/object_detection_using_vision_transformer.py",
        "layers Patches, PatchEncoder; data function",
    ),
    "vivit": Example(
        "vivit",
        "examples/vision/vivit.py",
        "layers TubeletEmbedding, PositionalEncoder; data function",
    ),
    "traffic": Example(
        "traffic",
        "examples/timeseries/timeseries_traffic_forecasting.py",
        "layers GraphConv inside LSTMGC; data function",
    ),
    "movielens": Example(
        "movielens",
        "examples/structured_data/collaborative_filtering_movielens.py",
        "model function (a keras.Model subclass); data function",
    ),
    "vit_small_ds": Example(
        "vit_small_ds",
        "examples/vision/vit_small_ds.py",
        "model function (constant attention mask, MultiHeadAttention subclass); data function",
        cheap=False,
    ),
    "perceiver": Example(
        "perceiver",
        "examples/vision/perceiver_image_classification.py",
        "model function (a keras.Model subclass after a Normalization); optimizer LAMB "
        "(a one-line subclass of keras.optimizers.Lamb); data function",
        cheap=False,
    ),
    "swin": Example(
        "swin",
        "examples/vision/swin_transformers.py",
        "layers PatchExtract, PatchEmbedding, SwinTransformer (WindowAttention, DropPath), "
        "PatchMerging; data function",
    ),
    "involution": Example(
        "involution",
        "examples/vision/involution.py",
        "model function (a layer returning a pair); data function",
    ),
    "pointnet": Example(
        "pointnet",
        "examples/vision/pointnet.py",
        "model function (its own activity regularizer); data function",
    ),
}


def spec_of(name: str) -> tuple[Path, dict]:
    path = EXAMPLES_DIR / EXAMPLES[name].folder / "spec.yaml"
    return path, yaml.safe_load(path.read_text())


def code_of(name: str):
    """The example's code file, imported under a name of its own (not its stem, which is the
    name dlrun gives it), so this module and a dlrun run in one process never share it."""
    path, spec = spec_of(name)
    (file,) = spec["code"]
    location = path.parent / file
    module_name = f"kerasio_plain_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    found = importlib.util.spec_from_file_location(module_name, location)
    module = importlib.util.module_from_spec(found)
    sys.modules[module_name] = module
    found.loader.exec_module(module)
    return module


# ---- the examples' models, composed in plain Keras as each example's script does -------------


def _mlp(x, units, rate, activation="gelu"):
    from keras import layers

    for width in units:
        x = layers.Dense(width, activation=activation)(x)
        x = layers.Dropout(rate)(x)
    return x


def _transformer(x, heads, key_dim, units, rate=0.1, epsilon=1e-6, depth=None, code=None):
    """The ViT block the examples share: LN, self-attention, add; LN, MLP, add (CCT puts
    stochastic depth before each add)."""
    from keras import layers

    x1 = layers.LayerNormalization(epsilon=epsilon)(x)
    attended = layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, dropout=0.1)(x1, x1)
    if depth is not None:
        attended = code.StochasticDepth(depth)(attended)
    x2 = layers.Add()([attended, x])
    x3 = _mlp(layers.LayerNormalization(epsilon=epsilon)(x2), units, rate)
    if depth is not None:
        x3 = code.StochasticDepth(depth)(x3)
    return layers.Add()([x3, x2])


def plain_vit(m):
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    augmentation = keras.Sequential(
        [
            layers.Normalization(),
            layers.Resizing(72, 72),
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(factor=0.02),
            layers.RandomZoom(height_factor=0.2, width_factor=0.2),
        ],
        name="data_augmentation",
    )
    encoded = m.PatchEncoder(144, 256)(m.Patches(6)(augmentation(inputs)))
    for _ in range(8):
        encoded = _transformer(encoded, 4, 64, [512, 256])
    x = layers.LayerNormalization(epsilon=1e-6)(encoded)
    x = layers.Dropout(0.5)(layers.Flatten()(x))
    x = _mlp(x, [2048, 1024], 0.5)
    return keras.Model(inputs, layers.Dense(100)(x))


def _mlp_classifier(m, blocks, positional_encoding=False):
    """The example's build_classifier(blocks, positional_encoding)."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    augmentation = keras.Sequential(
        [
            layers.Normalization(),
            layers.Resizing(64, 64),
            layers.RandomFlip("horizontal"),
            layers.RandomZoom(height_factor=0.2, width_factor=0.2),
        ],
        name="data_augmentation",
    )
    x = layers.Dense(256)(m.Patches(8)(augmentation(inputs)))
    if positional_encoding:
        x = m.PositionEmbedding(64, 256)(x)
    x = keras.Sequential(blocks)(x)
    x = layers.Dropout(0.2)(layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, layers.Dense(100)(x))


def plain_mlp_mixer(m):
    return _mlp_classifier(m, [m.MLPMixerLayer(64, 256, 0.2) for _ in range(4)])


def plain_fnet(m):
    return _mlp_classifier(m, [m.FNetLayer(256, 0.2) for _ in range(4)], positional_encoding=True)


def plain_gmlp(m):
    return _mlp_classifier(m, [m.gMLPLayer(64, 256, 0.2) for _ in range(4)])


def plain_cct(m):
    import keras
    import numpy as np
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    augmentation = keras.Sequential(
        [
            layers.Rescaling(scale=1.0 / 255),
            layers.RandomCrop(32, 32),
            layers.RandomFlip("horizontal"),
        ],
        name="data_augmentation",
    )
    encoded = m.PositionEmbedding()(m.CCTTokenizer()(augmentation(inputs)))
    for depth in np.linspace(0, 0.1, 2):
        encoded = _transformer(encoded, 2, 128, [128, 128], epsilon=1e-5, depth=depth, code=m)
    x = m.SequencePooling()(layers.LayerNormalization(epsilon=1e-5)(encoded))
    return keras.Model(inputs, layers.Dense(10)(x))


def plain_eanet(m):
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    augmentation = keras.Sequential(
        [
            layers.Normalization(),
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(factor=0.1),
            layers.RandomContrast(factor=0.1),
            layers.RandomZoom(height_factor=0.2, width_factor=0.2),
        ],
        name="data_augmentation",
    )
    x = m.PatchEmbedding(256, 64)(m.PatchExtract(2)(augmentation(inputs)))
    for _ in range(8):
        residual = x
        x = layers.LayerNormalization(epsilon=1e-5)(x)
        x = m.ExternalAttention(64, 4, 4, 0.2, 0.2)(x)
        x = layers.add([x, residual])
        residual = x
        x = layers.LayerNormalization(epsilon=1e-5)(x)
        x = layers.Dropout(0.2)(layers.Dense(64, activation="gelu")(x))
        x = layers.Dropout(0.2)(layers.Dense(64)(x))
        x = layers.add([x, residual])
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(100, activation="softmax")(x))


def plain_vit_detection(m):
    import keras
    from keras import layers

    inputs = keras.Input((224, 224, 3))
    encoded = m.PatchEncoder(49, 64)(m.Patches(32)(inputs))
    for _ in range(4):
        encoded = _transformer(encoded, 4, 64, [128, 64])
    x = layers.LayerNormalization(epsilon=1e-6)(encoded)
    x = layers.Dropout(0.3)(layers.Flatten()(x))
    x = _mlp(x, [2048, 1024, 512, 64, 32], 0.3)
    return keras.Model(inputs, layers.Dense(4)(x))


def plain_vivit(m):
    import keras
    from keras import layers

    inputs = keras.Input((28, 28, 28, 1))
    encoded = m.PositionalEncoder(128)(m.TubeletEmbedding(128, (8, 8, 8))(inputs))
    for _ in range(8):
        x1 = layers.LayerNormalization(epsilon=1e-6)(encoded)
        attended = layers.MultiHeadAttention(num_heads=8, key_dim=16, dropout=0.1)(x1, x1)
        x2 = layers.Add()([attended, encoded])
        x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
        x3 = keras.Sequential(
            [layers.Dense(128, activation="gelu"), layers.Dense(128, activation="gelu")]
        )(x3)
        encoded = layers.Add()([x3, x2])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(encoded))
    return keras.Model(inputs, layers.Dense(11, activation="softmax")(x))


def plain_traffic(m):
    import keras

    inputs = keras.Input((12, m.ROUTES, 1))
    return keras.Model(inputs, m.LSTMGC(1, 10, 64, 12, 3)(inputs))


def plain_movielens(m):
    import keras

    model = m.RecommenderNet(m.USERS, m.MOVIES, 50)
    model(keras.Input((2,)))  # as the example does: call it on an Input to build it
    return model


def plain_vit_small_ds(m):
    return m.build(vanilla=False)


def plain_perceiver(m):
    return m.build()


def plain_swin(m):
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = m.PatchEmbedding(256, 64)(m.PatchExtract((2, 2))(inputs))
    for shift in (0, 1):
        x = m.SwinTransformer(
            64,
            (16, 16),
            8,
            window_size=2,
            shift_size=shift,
            num_mlp=256,
            qkv_bias=True,
            drop_rate=0.01,
        )(x)
    x = layers.GlobalAveragePooling1D()(m.PatchMerging((16, 16), embed_dim=64)(x))
    return keras.Model(inputs, layers.Dense(100, activation="softmax")(x))


def plain_involution(m):
    return m.build()


def plain_pointnet(m):
    return m.build(2048, 10)


PLAIN = {name: globals()[f"plain_{name}"] for name in EXAMPLES}


def plain_model(name: str):
    import keras

    keras.utils.set_random_seed(0)
    return PLAIN[name](code_of(name))


# ---- dlrun's side --------------------------------------------------------------------------


def dlrun_params(name: str) -> int:
    """`dlrun validate` on the spec: it builds the model and ends with 'valid; N parameters'."""
    path, _ = spec_of(name)
    done = subprocess.run(
        [sys.executable, "-m", "dlrun", "validate", str(path)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dlrun validate {path}: {(done.stderr or done.stdout).strip()[-800:]}")
    last = done.stdout.strip().splitlines()[-1]
    return int(last.rsplit("valid; ", 1)[1].split()[0].replace(",", ""))


def dlrun_train(name: str, epochs: int, runs_dir: Path) -> dict:
    """`dlrun train` with --epochs; the code's hashes are remembered in a folder of its own."""
    path, _ = spec_of(name)
    before = set(runs_dir.glob("*"))
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlrun",
            "train",
            str(path),
            "--set",
            f"training.epochs={epochs}",
            "--runs-dir",
            str(runs_dir),
        ],
        capture_output=True,
        text=True,
        env={**ENV, "XDG_DATA_HOME": str(runs_dir / "data-home")},
        cwd=ROOT,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"dlrun train {path}: {(done.stderr or done.stdout).strip()[-800:]}")
    (run,) = set(runs_dir.glob(f"{spec_of(name)[1]['name']}-*")) - before
    metrics = json.loads((run / "metrics.json").read_text())
    return {"test": metrics.get("test", {}), "seconds": wall, "run": run.name}


# ---- plain Keras training, as the example's script would on the same data -----------------------


def _compile_args(spec: dict) -> dict:
    """The spec's compile section through Keras' own lookups (what the example passes)."""
    import keras

    def made(value, getter):
        if isinstance(value, str):
            return getter(value)
        config = {k: v for k, v in value.items() if k != "type"}
        return getter({"class_name": value["type"], "config": config})

    compile_ = spec["compile"]
    metrics = []
    for entry in compile_.get("metrics", []):
        metrics.append(entry if isinstance(entry, str) else made(entry, keras.metrics.get))
    return {
        "optimizer": made(compile_["optimizer"], keras.optimizers.get),
        "loss": made(compile_["loss"], keras.losses.get),
        "metrics": metrics,
    }


def plain_train(name: str, epochs: int) -> dict:
    import keras
    import numpy as np

    _, spec = spec_of(name)
    code = code_of(name)
    data = code.load(**spec["data"].get("args", {}))
    model = plain_model(name)
    scale = float(spec["data"].get("scale", 255))  # dlrun divides the inputs by data.scale
    for key in ("x_train", "x_val", "x_test"):
        if key in data and scale != 1:
            data[key] = data[key].astype("float32") / scale
    x_train, y_train = data["x_train"], data["y_train"]
    if spec["data"].get("one_hot", True) and spec["data"].get("task") != "regression":
        classes = int(max(y_train.max(), data["y_test"].max())) + 1
        y_train = keras.utils.to_categorical(y_train, classes)
        y_test = keras.utils.to_categorical(data["y_test"], classes)
    else:
        y_test = data["y_test"]
    for layer in _all_layers(model):  # the examples adapt their Normalization on x_train
        if isinstance(layer, keras.layers.Normalization):
            layer.adapt(x_train)
    model.compile(**_compile_args(spec))
    training = spec.get("training", {})
    fit = {"batch_size": training.get("batch_size", 128), "epochs": epochs, "verbose": 0}
    if "x_val" in data:
        y_val = data["y_val"]
        if y_train.ndim == 2 and np.ndim(y_val) == 1:
            y_val = keras.utils.to_categorical(y_val, y_train.shape[1])
        fit["validation_data"] = (data["x_val"], y_val)
    else:
        fit["validation_split"] = training.get("validation_split", 0.1)
    start = time.perf_counter()
    model.fit(x_train, y_train, **fit)
    seconds = time.perf_counter() - start
    scores = model.evaluate(data["x_test"], y_test, verbose=0, return_dict=True)
    return {"test": scores, "seconds": seconds}


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


# ---- report -------------------------------------------------------------------------------


def _score(test: dict) -> str:
    for key in ("accuracy", "acc", "sparse_categorical_accuracy"):
        if key in test:
            return f"acc {test[key]:.3f}"
    if "loss" in test:
        return f"loss {test['loss']:.4f}"
    return "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="also train both, --epochs each")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated example names")
    parser.add_argument("--out", type=Path, default=HERE / "kerasio_results.md")
    parser.add_argument(
        "--rows", type=Path, help="re-render the report from the JSON lines a run printed"
    )
    args = parser.parse_args(argv)
    if args.rows:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line[:1] == "{"]
        args.out.write_text(report(rows, args))
        print(f"wrote {args.out}")
        return 0
    names = [n for n in (args.only.split(",") if args.only else EXAMPLES) if n]
    rows = []
    header = {"machine": platform.node(), "started": time.strftime(STAMP, time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = {"name": name, "plain": plain_model(name).count_params(), "problem": ""}
            try:
                row["dlrun"] = dlrun_params(name)
            except RuntimeError as exc:
                row["dlrun"], row["problem"] = None, str(exc).splitlines()[-1]
            if args.train and EXAMPLES[name].cheap and row["dlrun"] is not None:
                row["plain_fit"] = plain_train(name, args.epochs)
                row["dlrun_fit"] = dlrun_train(name, args.epochs, Path(tmp))
            row.update(header, load=os.getloadavg()[0], epochs=args.epochs if args.train else 0)
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
    args.out.write_text(report(rows, args))
    print(f"wrote {args.out}")
    return 0 if all(r["dlrun"] == r["plain"] for r in rows) else 1


def _cell(row: dict, who: str) -> str:
    fit = row.get(f"{who}_fit")
    if not fit:
        return "not trained"
    return _score(fit["test"])


def report(rows: list[dict], args) -> str:
    trained = max((row.get("epochs", 0) for row in rows), default=0)
    trained = trained or (args.epochs if args.train else 0)  # rows of an older run
    loads = [row["load"] for row in rows if "load" in row]
    first = rows[0] if rows else {}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    lines = [
        "# keras.io examples through dlrun with their own code (issue 28)",
        "",
        f"Made by `python bench/kerasio.py{' --train --epochs ' + str(trained) if trained else ''}`"
        f" on {first.get('machine', 'this machine')}, {first.get('started', today)}"
        + (f", load average {min(loads):.1f} to {max(loads):.1f} (2 shared cores)" if loads else "")
        + ". **Plain Keras**: the example's model composed in Python the way its script does it,"
        " with the example's classes from the code file (bench/kerasio.py, PLAIN). **dlrun**: the"
        " spec (bench/kerasio/NAME/spec.yaml) built by `dlrun validate`. Data: each code file's"
        " `load`, synthetic arrays of the example's shapes and classes (no download here), the"
        " same for both sides; trained "
        + (f"{trained} epochs" if trained else "not at all")
        + " where affordable on this CPU, test scores of both sides from one run each (noisy,"
        " chance-level after so few epochs on 100 classes; they show both sides train, not"
        " which is better).",
        "",
        "| spec (keras-io example) | user code in the spec | keras.io says | plain Keras params "
        "| dlrun params | equal | plain Keras test | dlrun test |",
        "|---|---|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        ex = EXAMPLES[row["name"]]
        ours = f"{row['dlrun']:,}" if row["dlrun"] is not None else "-"
        equal = "yes" if row["dlrun"] == row["plain"] else f"NO {row['problem']}".strip()
        source = ex.source.removeprefix("examples/").removesuffix(".py")
        lines.append(
            f"| {row['name']} (`{source}`) | {ex.what} | {PUBLISHED.get(row['name'], '')} "
            f"| {row['plain']:,} | {ours} | {equal} "
            f"| {_cell(row, 'plain')} | {_cell(row, 'dlrun')} |"
        )
    same = {EXAMPLES[r["name"]].source for r in rows if r["dlrun"] == r["plain"]}
    whole = {
        source
        for source in same
        if all(r["dlrun"] == r["plain"] for r in rows if EXAMPLES[r["name"]].source == source)
    }
    lines += [
        "",
        NOTES.format(
            examples=len(whole), prior=PRIOR_EXACT, total=PRIOR_EXACT + len(whole), heavy=HEAVY
        ),
    ]
    return "\n".join(lines) + "\n"


HEAVY = (
    "`dlrun train bench/kerasio/NAME/spec.yaml --set training.epochs=1 --set data.args.n=200`:"
    " completed"
)
PRIOR_EXACT = 11  # docs: MEASURED.md, keras.io examples dlrun expressed exactly before issue 28

NOTES = """\
## What this shows, and the count

{examples} keras.io examples are expressed here exactly, each with the example's own Python as a
code file: the same model (the parameter count above, equal to the example's model built in
plain Keras; tests/test_kerasio_bench.py checks every spec) and the same compile and fit
settings (optimizer, loss, metrics, batch size, epochs, validation, callbacks). None of them
could be written before issue 28 (each needs code dlrun refused), so none is among the
{prior} exact examples of MEASURED.md (2026-12-06, not re-checked here): **{total} of keras.io's
101 vision, structured-data and timeseries examples are now expressible exactly**, short of the
project's goal of 40. What each spec changes, beside the data:

- Data: the example's download and preprocessing become a `load` function returning arrays
  (here synthetic, of the example's shapes); a user with the files writes `load` to read them.
  Where the example scales pixels itself the spec says `scale: 1` (or 255 where it divides).
- mlp_image_classification is three models (MLP-Mixer, FNet, gMLP): three specs, one code file.
- cct, eanet: functions of the example's graph (sequence pooling, position embedding, external
  attention) are written as layers holding the same weights.
- vit_small_ds: its attention mask is a constant, so the model is the example's builder
  (`model.function`); as in the example, its WarmUpCosine schedule is built but AdamW gets the
  fixed rate 0.001. Its augmentation layers are called one by one instead of as a Sequential,
  so that dlrun adapts the Normalization on the training images as the example does.
- perceiver: the example's keras.Model subclass after a Normalization (moved out of its
  augmentation so that dlrun adapts it); the example's tfa LAMB is Keras 3's Lamb, named through
  a one-line subclass `LAMB` in the code file because dlrun's optimizer lookup
  (keras.optimizers.get) does not know "lamb" and says "unknown optimizer 'lamb'; did you mean
  'lamb'?".
- pointnet: the model is the example's builder (its T-nets carry its own activity regularizer);
  its tf.data jitter is a training-only layer in front (its other step, shuffling the points'
  order, changes nothing PointNet computes).
- involution: the layer returns (output, kernel), which a graph entry cannot unpack, so the
  model is the example's builder. The example's other model, a plain Conv2D stack, needs no code.
- swin: as the example's DropPath (in the version read here) takes no `training` argument, it
  drops paths in inference too; the code file keeps that (DropPath(training_only=False)).
- traffic: the road graph is computed in the code file (as the example computes it from the
  distances file); the example's last step, a numpy comparison with a naive forecast on one
  horizon, is `dlrun predict` and numpy.
- movielens, involution: validated on their test split, as the examples do (x_val = x_test).

vit, vit_small_ds and perceiver are too big to train in this table on 2 shared cores; each
trained through dlrun separately for one epoch on 200 samples ({heavy}).

Found on the way, by these specs: a graph whose Normalization reads the input could not be
adapted (dlrun/data/adapt.py took a functional model's layers for a stack; fixed, test in
tests/test_graphs.py), and TensorBoard's weight histograms failed a run at its first epoch on a
float32 constant of large values (dlrun/store/events.py; fixed, test in test_tensorboard.py).
Left alone: dlrun lists "lamb" among the optimizers but looks it up through
keras.optimizers.get, which refuses it; preprocessing layers nested inside a model.function's
model (a Sequential inside it, or a subclassed model's own) are not adapted, only the model's
top-level ones.

Not verified here, the next candidates with the same features (read, not written or run):
token_learner, shiftvit, focal_modulation_network (their models are builders or layer
classes trained by a plain fit); classification_with_grn_and_vsn, tabtransformer,
wide_deep_cross_networks, deep_neural_decision_forests (custom layers, but named string
feature inputs, which a `load` function would have to give dlrun as `x_train_<input>` arrays);
mirnet (a custom loss and metric); attention_mil_classification (a custom layer over bags of
images, trained as an ensemble of several models: several runs). Out of reach of issue 28's
features: examples whose training is their own loop or `train_step` for another backend,
layers from other libraries (KerasHub, TF-Hub) and augmentation done in tf.data with no layer
form (mobilevit: random crops of a larger resize in training, a plain resize in validation).
"""


if __name__ == "__main__":
    sys.exit(main())
