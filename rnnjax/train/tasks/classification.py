"""Image classification as sequences: MNIST rows (the textbook), or pixel by pixel (sequential
MNIST), optionally in one fixed random order (permuted sequential MNIST)."""

import numpy as np

from rnnjax import data
from rnnjax.train import builders, losses
from rnnjax.train.steps import model_forward
from rnnjax.train.tasks._task import Task

SEQUENCES = ("rows", "pixels")


def build(config) -> Task:
    """Loads ``config.data`` and builds ``config.model``'s classifier (``builders.classifier``),
    with as many classes as the dataset's metadata names (else as its labels show)."""
    train, test = load_classification(config.data)
    classes = data.class_count(
        config.data.name,
        data_dir=config.data.data_dir or None,
        manual_dir=config.data.manual_dir or None,
    )
    return classifier_task(train, test, config.model, classes=classes)


def classifier_task(train: dict, test: dict, model_config, *, classes: int | None = None) -> Task:
    """The ``Task`` of classifying ``{"inputs", "labels"(, "lengths")}`` arrays with
    ``builders.classifier(model_config)``: softmax cross-entropy, accuracy, a confusion matrix.

    ``classes``: the number of classes; None takes it from the labels of both splits.
    """
    classes = classes or num_classes(train, test)
    in_size = train["inputs"].shape[-1]
    model = builders.classifier(model_config, in_size=in_size, num_classes=classes)
    forward = model_forward(model)
    return Task(
        train, test, model, forward, losses.softmax_xent, num_classes=classes, headline="accuracy"
    )


def load_classification(data_config) -> tuple[dict, dict]:
    """Train and test splits as ``{"inputs": float32 [N, T, D], "labels": int32 [N]}``.

    Images ``[N, H, W(, 1)]`` become H time steps of W pixels scaled to [0, 1] with
    ``sequence="rows"`` (the textbook's MNIST-as-sequences), or H·W steps of one pixel with
    ``sequence="pixels"`` (sequential MNIST); ``permute=True`` shuffles the pixel order with the
    fixed permutation of ``permutation_seed`` (permuted sequential MNIST), the same for every
    example and split. ``train_limit``/``test_limit`` > 0 keep the first N examples.
    """
    sequence = data_config.get("sequence", "rows")
    if sequence not in SEQUENCES:
        raise ValueError(f"data.sequence must be one of {SEQUENCES}, got {sequence!r}")
    permute = data_config.get("permute", False)
    if permute and sequence != "pixels":
        raise ValueError("data.permute=True needs data.sequence='pixels', got 'rows'")
    limits = {"train": data_config.train_limit, "test": data_config.test_limit}
    for split, limit in limits.items():  # a negative limit would slice off the last examples
        if limit < 0:
            raise ValueError(f"data.{split}_limit must be >= 0 (0 keeps all), got {limit}")
    splits = []
    for split, limit in limits.items():
        arrays = data.load(
            data_config.name,
            split,
            data_dir=data_config.data_dir or None,
            manual_dir=data_config.manual_dir or None,
        )
        images, labels = arrays["image"], arrays["label"]
        if limit:
            images, labels = images[:limit], labels[:limit]
        inputs = image_rows(images)
        if sequence == "pixels":
            inputs = inputs.reshape(len(inputs), -1, 1)
        if permute:
            order = pixel_permutation(inputs.shape[1], data_config.get("permutation_seed", 0))
            inputs = inputs[:, order]
        splits.append({"inputs": inputs, "labels": labels.astype(np.int32)})
    return splits[0], splits[1]


def pixel_permutation(num_pixels: int, seed: int) -> np.ndarray:
    """The fixed pixel order of permuted sequential MNIST for ``seed``."""
    return np.random.default_rng(seed).permutation(num_pixels)


def image_rows(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W]`` or ``[N, H, W, 1]`` -> float32 ``[N, H, W]`` in [0, 1]."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W] or [N, H, W, 1], got {images.shape}")
    if images.dtype != np.uint8:  # scaling other values by 1/255 would be silently wrong
        raise ValueError(f"images must be uint8 pixels in [0, 255], got {images.dtype}")
    return images.astype(np.float32) / 255.0


def num_classes(*splits: dict) -> int:
    """The number of classes, from the largest label of all ``splits`` (a training subset may
    lack the highest classes)."""
    return max(int(split["labels"].max()) for split in splits) + 1
