"""Writes cancer_train.csv and cancer_val.csv beside this file from scikit-learn's bundled
breast cancer data (569 tumours, 30 measurements), for configs/cancer_callbacks.yaml.

The label column spells the classes (benign, malignant); 20% of the rows are the validation
csv. Usage: python configs/data/make_cancer.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent


def main() -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    train, val = train_test_split(
        frame, test_size=0.2, stratify=frame["diagnosis"], random_state=0
    )
    train.to_csv(HERE / "cancer_train.csv", index=False, float_format="%.6g")
    val.to_csv(HERE / "cancer_val.csv", index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
