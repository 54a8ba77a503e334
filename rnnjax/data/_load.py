"""Loading tfds splits as numpy arrays through ``array_record`` (no TensorFlow), cached as .npz."""

import functools
import hashlib
import logging
import zipfile
import zlib
from pathlib import Path
from urllib.parse import quote

import numpy as np
import tensorflow_datasets as tfds

from rnnjax.data import _cache
from rnnjax.data._builders import IDX_FILES, FashionMnistIdx, MnistIdx

_IDX_BUILDERS = {"mnist": MnistIdx, "fashion_mnist": FashionMnistIdx}
_DEBIAN_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
_CHUNK = 8192


def load(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    manual_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Loads a whole tfds split into memory as numpy arrays.

    ``"mnist"`` and ``"fashion_mnist"`` are built offline by ``MnistIdx``/``FashionMnistIdx``
    from the IDX files in ``manual_dir`` (for Fashion-MNIST the Debian package's folder
    ``/usr/share/datasets/fashion-mnist`` is the default); any other name must already be
    prepared in ``data_dir`` in the ``array_record`` format. Nothing is ever downloaded. The
    decoded split is cached in ``<prepared dir>/numpy/<split>.npz`` and read from there next time;
    a cache that cannot be read or does not match the split is rebuilt, with a warning.

    Args:
      name: a tfds name such as ``"mnist"``, ``"imdb_reviews"`` or ``"my_set/config:1.0.0"``.
      split: a tfds split such as ``"train"``, ``"test"`` or ``"train[:90%]"``.
      data_dir: where prepared datasets live; tfds' default (``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``) if None.
      manual_dir: folder with the IDX files, used when MNIST/Fashion-MNIST are not prepared yet.

    Returns:
      One ``[N, ...]`` array per feature, keyed by feature name (nested features as
      ``"outer/inner"``), in the split's order. MNIST-style sets give ``{"image": uint8
      [N, 28, 28], "label": int64 [N]}``. Image features with one channel lose it (``[N, H, W]``),
      others stay ``[N, H, W, C]``; text is an object array of ``bytes``; features of varying
      shape are object arrays holding one array per example.

    Example::

      train = rnnjax.data.load("mnist", "train", manual_dir="~/data/mnist")
      train["image"].shape  # (60000, 28, 28)
    """
    data_dir = Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
    builder = _builder(name, data_dir, manual_dir)
    cache = Path(builder.data_dir) / "numpy" / _cache_name(split)
    if cache.exists() and (arrays := _cached(cache, builder, split)) is not None:
        return arrays
    arrays = _read_split(builder, split)
    try:
        _cache.save(cache, arrays)
    except OSError as e:  # a read-only data_dir still loads, only more slowly next time
        logging.warning("Could not cache %s %s in %s: %s", name, split, cache, e)
    return arrays


def class_count(
    name: str,
    feature: str = "label",
    *,
    data_dir: str | Path | None = None,
    manual_dir: str | Path | None = None,
) -> int | None:
    """The number of classes of ``name``'s ``feature`` from the dataset's metadata (tfds'
    ``ClassLabel.num_classes``), or None when the feature is no ClassLabel of known size.

    The metadata, not the largest label of a split: a split (or the first N of it) may lack
    the highest classes. Arguments as for ``load``, which prepares the dataset first.
    """
    data_dir = Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
    features = _builder(name, data_dir, manual_dir).info.features
    label = dict(features.items()).get(feature)  # a FeaturesDict has no .get
    if isinstance(label, tfds.features.ClassLabel):
        return label.num_classes
    return None


def _builder(name: str, data_dir: Path, manual_dir) -> tfds.core.DatasetBuilder:
    """Returns a prepared builder, preparing an IDX set first; fails fast when it cannot."""
    if name in _IDX_BUILDERS:
        builder = _IDX_BUILDERS[name](data_dir=str(data_dir), file_format="array_record")
        if not builder.is_prepared():
            config = tfds.download.DownloadConfig(manual_dir=str(_idx_folder(name, manual_dir)))
            builder.download_and_prepare(download_config=config)
        elif manual_dir and (missing := _missing_idx_files(Path(manual_dir).expanduser())):
            _warn_unread_manual_dir(str(manual_dir), ", ".join(missing), name, builder.data_dir)
        return builder
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except tfds.core.registered.DatasetNotFoundError:
        raise FileNotFoundError(
            f"No dataset named {name!r}: it is neither a tfds dataset nor prepared in "
            f"{data_dir}. Check the name (`tfds.list_builders()` lists them; rnnjax's own are "
            f"{', '.join(_IDX_BUILDERS)}) or pass the data_dir that holds it."
        ) from None
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in {data_dir}. rnnjax never downloads: prepare it "
            f"there first in the array_record format (e.g. `tfds build {name} "
            f"--data_dir={data_dir} --file_format=array_record` on a machine with internet), "
            "or pass the data_dir that holds it."
        )
    return builder


@functools.cache  # once per run, not at each split loaded
def _warn_unread_manual_dir(manual_dir: str, missing: str, name: str, prepared: str) -> None:
    """A prepared set needs no IDX files, but a mistyped path must not pass unnoticed."""
    logging.warning(
        "manual_dir=%s lacks %s; using %s as already prepared in %s.",
        manual_dir,
        missing,
        name,
        prepared,
    )


def _cache_name(split: str) -> str:
    """The cache file of ``split``: its quoted name (``train.npz``), or a hash of it when that
    would be too long for a file name (a split of many slices joined by ``+``)."""
    name = f"{quote(split, safe='')}.npz"
    if len(name) <= 128:
        return name
    return f"split-{hashlib.sha256(split.encode()).hexdigest()[:32]}.npz"


def _cached(cache: Path, builder, split: str) -> dict[str, np.ndarray] | None:
    """The cached split, or None (with a warning naming the file) when it cannot be read or does
    not hold the split's features and number of examples: the prepared dataset is the truth, so
    a corrupt or stale cache (e.g. torn by a crash) is rebuilt rather than failing the run."""
    try:
        arrays = _cache.load(cache)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        logging.warning("Rebuilding %s: it cannot be read (%s).", cache, e)
        return None
    columns = _columns(builder)
    expected = builder.info.splits[split].num_examples
    lengths = {key: len(value) for key, value in arrays.items()}
    if sorted(arrays) != sorted(columns) or set(lengths.values()) != {expected}:
        logging.warning(
            "Rebuilding %s: expected features %s of %d examples, found lengths %s.",
            cache,
            sorted(columns),
            expected,
            lengths,
        )
        return None
    found = {key: f"{a.dtype}{list(a.shape[1:])}" for key, a in arrays.items()}
    if found != columns:
        logging.warning("Rebuilding %s: expected columns %s, found %s.", cache, columns, found)
        return None
    return arrays


def _columns(builder) -> dict[str, str]:
    """Each feature's column as ``_read_split`` makes it: dtype and per-example shape, e.g.
    ``uint8[28, 28]`` (text and features of varying shape: ``object[]``)."""
    squeeze = _single_channel_images(builder.info.features)
    columns = {}
    for key, info in _flatten(builder.info.features.get_tensor_info()):
        shape = info.shape[:-1] if key in squeeze else info.shape
        fixed = np.dtype(info.np_dtype).kind not in "OSU" and None not in shape
        columns[key] = f"{np.dtype(info.np_dtype)}{list(shape)}" if fixed else "object[]"
    return columns


def _idx_folder(name: str, manual_dir) -> Path:
    """Returns the folder holding the four IDX files for ``name``, or raises a helpful error."""
    folder = Path(manual_dir).expanduser() if manual_dir else _DEBIAN_DIRS.get(name)
    missing = IDX_FILES if folder is None else _missing_idx_files(folder)
    if not missing:
        return folder
    hint = (
        " For fashion_mnist, `apt-get install dataset-fashion-mnist` puts them in "
        f"{_DEBIAN_DIRS['fashion_mnist']}, the default manual_dir."
        if name == "fashion_mnist"
        else ""
    )
    raise FileNotFoundError(
        f"{name} is not prepared and no IDX files were found to build it offline: expected "
        f"{', '.join(IDX_FILES)} in manual_dir={str(folder) if folder else None!r}, missing "
        f"{', '.join(missing)}. Pass manual_dir=<folder with those files>.{hint}"
    )


def _missing_idx_files(folder: Path) -> list[str]:
    return [f for f in IDX_FILES if not (folder / f).is_file()]


def _read_split(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
    """Decodes every example of ``split`` with ``tfds.data_source`` into one array per feature."""
    source = builder.as_data_source(split=split)
    infos = dict(_flatten(builder.info.features.get_tensor_info()))
    columns = {key: [] for key in infos}
    for start in range(0, len(source), _CHUNK):
        for example in source.__getitems__(list(range(start, min(start + _CHUNK, len(source))))):
            for key, value in _flatten(example):
                columns[key].append(value)
    squeeze = _single_channel_images(builder.info.features)
    return {key: _column(key, columns[key], infos[key], key in squeeze) for key in infos}


def _column(key: str, values: list, info, squeeze: bool) -> np.ndarray:
    """Stacks one feature's values: fixed shapes into ``[N, ...]``, others into an object array."""
    if np.dtype(info.np_dtype).kind in "OSU":
        if info.shape != ():
            raise ValueError(f"feature {key!r}: text must be scalar, got shape {info.shape}")
        return _objects(values)
    arrays = [np.asarray(v, info.np_dtype) for v in values]
    if squeeze:
        arrays = [a[..., 0] for a in arrays]
    if None in info.shape:
        return _objects(arrays)
    return np.stack(arrays) if arrays else np.zeros((0, *info.shape), info.np_dtype)


def _objects(values: list) -> np.ndarray:
    column = np.empty(len(values), object)
    for i, value in enumerate(values):  # item by item: equal-shaped arrays must not broadcast
        column[i] = value
    return column


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def _single_channel_images(features, prefix: str = "") -> set[str]:
    keys = set()
    for key, feature in features.items():
        if isinstance(feature, tfds.features.FeaturesDict):
            keys |= _single_channel_images(feature, f"{prefix}{key}/")
        elif isinstance(feature, tfds.features.Image) and feature.shape[-1] == 1:
            keys.add(f"{prefix}{key}")
    return keys
