"""`data.classes` and `data.limit`: few-label experiments on any data source. No TensorFlow.

Both work on the labels as the data has them (digits' integers, a csv's strings, a folder's
subfolder names), before they are numbered, so a spec names classes the way the data does.
"""

from __future__ import annotations

import numpy as np

from dlrun.data.splits import lead, take
from dlrun.spec.schema import Spec

# The stratified sample of `limit` is fixed, like the test split: runs stay comparable.
LIMIT_SEED = 0


def keep_classes(spec: Spec, y: np.ndarray, y_test: np.ndarray | None = None) -> tuple:
    """(train mask, test mask or None, class names): the rows of the classes in data.classes.

    The kept labels are re-numbered 0..K-1 in the order data.classes lists them: see recode.
    """
    wanted = [str(c) for c in spec.data.classes]
    found = np.unique(np.ravel(y).astype(str))
    missing = [c for c in wanted if c not in set(found)]
    if missing:
        shown = ", ".join(map(str, found[:20])) + (" ..." if len(found) > 20 else "")
        raise spec.error(
            ("data", "classes"),
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the data's "
            f"labels; the data has {shown}",
        )
    train = np.isin(np.ravel(y).astype(str), wanted)
    test = None if y_test is None else np.isin(np.ravel(y_test).astype(str), wanted)
    return train, test, wanted


def recode(y: np.ndarray, names: list[str]) -> np.ndarray:
    """Labels -> their index in names (every label must be one of them)."""
    index = {name: number for number, name in enumerate(names)}
    return np.array([index[label] for label in np.ravel(y).astype(str)], dtype=np.int64)


def limited(spec: Spec, y: np.ndarray) -> np.ndarray:
    """Indices of data.limit training rows, stratified by label and in their original order."""
    from sklearn.model_selection import train_test_split

    limit, labels = spec.data.limit, np.ravel(y).astype(str)
    classes = len(np.unique(labels))
    if limit < classes:
        raise spec.error(
            ("data", "limit"),
            f"{limit} samples cannot hold one of each of the {classes} classes; "
            f"use a limit of at least {classes}",
        )
    if limit >= len(labels):
        return np.arange(len(labels))
    rows = np.arange(len(labels))
    try:
        kept, _ = train_test_split(rows, train_size=limit, stratify=labels, random_state=LIMIT_SEED)
    except ValueError:  # a class with a single sample cannot be stratified: plain sample
        kept, _ = train_test_split(rows, train_size=limit, random_state=LIMIT_SEED)
    return np.sort(kept)


def select(spec: Spec, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray):
    """data.classes then data.limit on train and test splits -> (x, y, x_test, y_test, names).

    names is None unless data.classes re-numbered the labels. The test split keeps every
    sample of the kept classes: limit is about how few labels training sees.
    """
    names = None
    if spec.data.classes:
        train, test, names = keep_classes(spec, y, y_test)
        x, y = take(x, train), recode(y[train], names)
        x_test, y_test = take(x_test, test), recode(y_test[test], names)
    if spec.data.limit:
        rows = limited(spec, lead(y))  # several outputs: sampled by the first one's labels
        x, y = take(x, rows), take(y, rows)
    return x, y, x_test, y_test, names
