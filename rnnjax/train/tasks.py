"""Datasets as training arrays: images become sequences of rows."""

import numpy as np

from rnnjax import data


def load_classification(data_config) -> tuple[dict, dict]:
    """Train and test splits as ``{"inputs": float32 [N, T, D], "labels": int32 [N]}``.

    Images ``[N, H, W(, 1)]`` become H time steps of W pixels scaled to [0, 1] (the textbook's
    MNIST-as-sequences). ``train_limit``/``test_limit`` > 0 keep the first N examples.
    """
    splits = []
    for split, limit in (("train", data_config.train_limit), ("test", data_config.test_limit)):
        arrays = data.load(
            data_config.name,
            split,
            data_dir=data_config.data_dir or None,
            manual_dir=data_config.manual_dir or None,
        )
        images, labels = arrays["image"], arrays["label"]
        if limit:
            images, labels = images[:limit], labels[:limit]
        splits.append({"inputs": image_rows(images), "labels": labels.astype(np.int32)})
    return splits[0], splits[1]


def image_rows(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W]`` or ``[N, H, W, 1]`` -> float32 ``[N, H, W]`` in [0, 1]."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W] or [N, H, W, 1], got {images.shape}")
    return images.astype(np.float32) / 255.0


def num_classes(split: dict) -> int:
    """The number of classes, from the largest label."""
    return int(split["labels"].max()) + 1
