"""A csv data set: the label column, numeric features, and text columns one-hot encoded.

Numeric columns are features as they are. Text columns must be named in `data.categorical`:
they are one-hot encoded by scikit-learn's OneHotEncoder fitted on the training split (a
category it never saw encodes as all zeros), and the categories are recorded in the run so that
evaluate encodes new data the same way. A second csv (`data.validation_path`,
`data.test_path`) must have the same columns. `data.columns` or `data.drop` choose the features;
`data.missing` says what a blank cell does: refused, its row dropped, or filled with the
training split's median or most frequent value (`fill`, recorded like the categories).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.data import checks
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import Spec


def read_frame(spec: Spec, path: Path, loc: tuple, notes: list[str] | None = None):
    """The csv as a DataFrame of the chosen feature columns and the label column: a readable
    file with rows; with data.missing: drop, rows with a blank cell removed (told in notes)."""
    import pandas as pd

    if not path.is_file():
        raise spec.missing(loc, path)
    checks.csv_header(spec, path)  # a column named twice, before pandas renames it
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise spec.error(loc, f"{path} is not a readable csv ({reason})") from None
    if frame.empty:
        raise spec.error(loc, f"{path} has a header but no rows")
    column = spec.data.label_column
    if column not in frame.columns:
        raise spec.error(
            ("data", "label_column"),
            f"{path} has no column {column!r}; found {', '.join(map(str, frame.columns[:10]))}",
        )
    frame = frame[[*chosen_columns(spec, [str(c) for c in frame.columns], path), column]]
    if spec.data.missing == "drop":
        blank = frame.isna().any(axis=1).to_numpy()
        if blank.all():
            raise spec.error(loc, f"{path}: every row has a blank cell; nothing is left to use")
        if blank.any():
            frame = frame[~blank]
            if notes is not None:
                notes.append(
                    f"{checks.name(path)}: dropped {int(blank.sum())} of {len(blank)} rows "
                    "with a blank cell (data.missing: drop)"
                )
    checks.csv_frame(spec, path, frame, column)  # blank labels, no features, one class
    return frame


def chosen_columns(spec: Spec, found: list[str], path: Path) -> list[str]:
    """The feature columns: data.columns in its order, or every column but the label and
    data.drop."""
    data = spec.data
    features = [c for c in found if c != data.label_column]
    for key in ("columns", "drop"):
        named = getattr(data, key) or []
        unknown = [c for c in named if c not in features]
        if unknown:
            # Scoring another file on a run's recorded columns: say how the shapes differ too.
            sizes = (
                f"; data.columns names {len(named)} features, shape ({len(named)},), and the "
                f"file has {len(features)}, shape ({len(features)},)"
                if key == "columns" and len(named) != len(features)
                else ""
            )
            raise spec.error(
                ("data", key),
                f"{checks.name(path)} has no column {unknown[0]!r}{sizes}; its feature columns "
                f"are {', '.join(features[:10])}" + did_you_mean(unknown[0], features),
            )
    if data.columns:
        return list(data.columns)
    return [c for c in features if c not in (data.drop or [])]


def features(spec: Spec, frame, path: Path, loc: tuple) -> tuple[np.ndarray, list[str]]:
    """The feature columns: float32 when all are numeric, else an object array whose text
    columns are all in data.categorical (encoded after the split, see encode)."""
    x = frame.drop(columns=[spec.data.label_column])
    categorical = spec.data.categorical or []
    unknown = [c for c in categorical if c not in x.columns]
    if unknown:
        raise spec.error(
            ("data", "categorical"),
            f"{path} has no column {unknown[0]!r}; its feature columns are "
            f"{', '.join(map(str, x.columns[:10]))}",
        )
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    # pandas' own test: numpy's issubdtype cannot read pandas' string dtype
    text = [c for c in x.columns if not is_numeric_dtype(x[c]) or is_bool_dtype(x[c])]
    loose = [c for c in text if c not in categorical]
    if loose:
        raise spec.error(
            loc,
            f"{path}: columns {loose} hold text, not numbers; list them in data.categorical "
            "to one-hot encode them, or remove them",
        )
    if spec.data.missing == "refuse":
        checks.blank_text(spec, path, x, categorical)
    numbers = [c for c in x.columns if c not in categorical]
    values = x[numbers].to_numpy(np.float32)
    if spec.data.missing == "fill":  # filled after the split; infinity is still refused
        values = np.where(np.isnan(values), 0, values)
    checks.finite_features(spec, path, values, columns=numbers)
    if not categorical:
        return x.to_numpy(np.float32), list(map(str, x.columns))
    return x.to_numpy(dtype=object), list(map(str, x.columns))


def per_input(spec: Spec, x: np.ndarray, columns: list[str], path: Path):
    """The feature columns as they are, or for several inputs {input: its columns' array}."""
    names = spec.model.several_inputs
    if not names:
        return x
    arrays = {}
    for name in names:
        wanted = spec.model.inputs[name].columns
        unknown = [column for column in wanted if column not in columns]
        if unknown:
            raise spec.error(
                ("model", "inputs", name, "columns"),
                f"{path} has no column {unknown[0]!r}; its feature columns are "
                f"{', '.join(columns[:10])}" + did_you_mean(unknown[0], columns),
            )
        arrays[name] = x[:, [columns.index(column) for column in wanted]]
    return arrays


def same_columns(
    spec: Spec, columns: list[str], other: list[str], path: Path, key: str = "validation_path"
) -> None:
    if other != columns:
        what = "validation" if key == "validation_path" else "test"
        raise spec.error(
            ("data", key),
            f"{path} has columns {other[:10]}, the training csv {columns[:10]}; give the "
            f"{what} csv the same columns in the same order",
        )


def encode(
    spec: Spec,
    columns: list[str],
    x_train: np.ndarray,
    others: list[np.ndarray | None],
    known: dict[str, list[str]] | None = None,
) -> tuple[np.ndarray, list[np.ndarray | None], dict]:
    """Object arrays -> float32: numeric columns as they are, data.categorical one-hot by an
    encoder fitted on x_train, or on `known` categories (a trained run's record, so that new
    data encodes as the training data did). Returns the arrays and {column: categories}."""
    if x_train.dtype != object:
        return x_train, others, {}
    from sklearn.preprocessing import OneHotEncoder

    wanted = spec.data.categorical or []
    picked = [columns.index(c) for c in wanted]
    numeric = [i for i in range(len(columns)) if i not in picked]
    fixed = "auto"
    if known:
        missing = [c for c in wanted if c not in known]
        if missing:
            raise spec.error(
                ("data", "categorical"),
                f"the run recorded no categories for {missing}; its categorical columns are "
                f"{sorted(known)}",
            )
        fixed = [np.array(known[c], dtype=object) for c in wanted]
    encoder = OneHotEncoder(
        categories=fixed, handle_unknown="ignore", sparse_output=False, dtype=np.float32
    )
    encoder.fit(x_train[:, picked].astype(str))

    def one(x: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        try:
            plain = x[:, numeric].astype(np.float32)
        except (TypeError, ValueError):
            raise spec.error(
                ("data", "categorical"), "a column not in data.categorical holds text"
            ) from None
        return np.concatenate([plain, encoder.transform(x[:, picked].astype(str))], axis=1)

    categories = {
        c: [str(v) for v in values] for c, values in zip(wanted, encoder.categories_, strict=True)
    }
    return one(x_train), [one(x) for x in others], categories


def fill(
    spec: Spec,
    columns: list[str],
    x_train: np.ndarray,
    others: list[np.ndarray | None],
    known: dict | None = None,
) -> tuple[np.ndarray, list[np.ndarray | None], dict]:
    """data.missing: fill: blank cells take their column's median (numbers) or most frequent
    value (text) in x_train, or the values a trained run recorded (`known`), so that evaluate
    and predict fill new data as the training data was. Returns the arrays and {column: value}."""
    import pandas as pd

    text = set(spec.data.categorical or [])
    train = pd.DataFrame(x_train, columns=columns)
    values: dict = {}
    for column in columns:
        if known and column in known:
            values[column] = known[column]
            continue
        present = train[column].dropna()
        if present.empty:
            raise spec.error(
                ("data", "missing"),
                f"column {column!r} is blank in every row of the training split; nothing "
                "to fill it with: drop the column (data.drop) or fill it in",
            )
        if column in text:
            values[column] = str(present.astype(str).mode().iloc[0])
        else:
            values[column] = float(pd.to_numeric(present).median())

    def one(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else filled(x, columns, values)

    return one(x_train), [one(x) for x in others], values


def filled(x: np.ndarray, columns: list[str], values: dict) -> np.ndarray:
    """x with each blank cell of a column replaced by values[column], dtype kept."""
    import pandas as pd

    frame = pd.DataFrame(x, columns=columns)
    frame = frame.fillna({c: v for c, v in values.items() if c in frame.columns})
    return frame.to_numpy(dtype=x.dtype)
