"""The data a run trains on (Data) and how it is split: the fixed split seed and k-fold indices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlrun.spec.schema import Spec

# The one fixed split for offline data without a test split of its own: the same test
# samples whatever the run's seed, so runs stay comparable.
SPLIT_SEED = 0
# training.validation_split when the spec leaves it unset and the data has no validation set
DEFAULT_VALIDATION_SPLIT = 0.1


def validation_share(spec: Spec, own: bool = False) -> float:
    """The share of the training split held out for validation; `own`: the data brings its
    own validation set, so none is held out (and giving both is refused)."""
    split = spec.training.validation_split
    if own:
        if split:
            raise spec.error(
                ("training", "validation_split"),
                f"{split} holds out part of the training data, but the data has its own "
                "validation set; remove validation_split (or set it to 0)",
            )
        return 0.0
    return DEFAULT_VALIDATION_SPLIT if split is None else split


def count(x) -> int:
    """Samples in x: an array, or one array per input of a graph (the same count in each)."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def lead(y):
    """The targets that split and sample by class: y, or the first of several outputs'."""
    return next(iter(y.values())) if isinstance(y, dict) else y


def take(x, rows):
    """Rows of x (an index array or a slice), every input of a graph's the same rows."""
    if isinstance(x, dict):
        return {name: array[rows] for name, array in x.items()}
    return x[rows]


def each(x, function):
    """function applied to x, or to each input's array of a graph's."""
    if isinstance(x, dict):
        return {name: function(array) for name, array in x.items()}
    return function(x)


@dataclass
class Data:
    # x_*: an array, or for a graph of several inputs {input name: array}, rows aligned
    x_train: np.ndarray | dict[str, np.ndarray]
    # y_*: likewise, {output name: array} for several outputs
    y_train: np.ndarray | dict[str, np.ndarray]
    x_val: np.ndarray | dict[str, np.ndarray] | None
    y_val: np.ndarray | dict[str, np.ndarray] | None
    x_test: np.ndarray | dict[str, np.ndarray]
    y_test: np.ndarray | dict[str, np.ndarray]
    num_classes: int | dict[str, int]  # regression: the number of targets per sample
    class_names: list[str] | dict[str, list[str] | None] | None = None  # evaluate shows them
    source: object | None = None  # images.FolderSource: x_* are file paths it decodes
    task: str = "classification"  # or regression: y_* are numbers, not classes
    # What the run must record to read new data the same way (csv categories, ...).
    recorded: dict = field(default_factory=dict)
    validation: str = "split"  # split (validation_split), own (the data's), cv, or none
    feature_columns: list[str] | None = None  # a csv's feature columns, in training order
    notes: list[str] = field(default_factory=list)  # told to the user (rows dropped, ...)

    @property
    def input_shape(self) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
        """One sample's shape; several inputs: {input name: shape}."""
        if self.source is not None:
            return self.source.input_shape
        return each(self.x_train, lambda x: tuple(x.shape[1:]))


def fold_indices(
    labels: np.ndarray, folds: int, spec: Spec, stratified: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-fold (train, validation) index pairs over the training split, fixed; stratified
    by class for classification."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not stratified:
        if folds > len(labels):
            raise spec.error(
                ("data", "cv", "folds"), f"{folds} folds need {folds} samples; got {len(labels)}"
            )
        splitter = KFold(n_splits=folds, shuffle=True, random_state=SPLIT_SEED)
        return list(splitter.split(np.zeros(len(labels))))
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if folds > smallest:
        raise spec.error(
            ("data", "cv", "folds"),
            f"{folds} folds need at least {folds} samples of every class; "
            f"the smallest class has {smallest}",
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SPLIT_SEED)
    return list(splitter.split(np.zeros(len(labels)), labels))
