"""Command-line glue: fail fast on mistyped ``--config.key=value`` overrides."""

import importlib.util
import logging
from pathlib import Path

import ml_collections


def flatten_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted key of ``config`` (nested ConfigDicts included), sorted."""
    keys = []
    for name, value in config.items():
        keys.append(prefix + name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flatten_keys(value, f"{prefix}{name}."))
    return sorted(keys)


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Calls ``get_config()`` of a config file (the file that ``--config`` names)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--config must name a config file, got {path!r} (not found)")
    spec = importlib.util.spec_from_file_location("rnnjax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def load_config(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """A config file's config with dotted-key ``overrides`` applied, for research code.

    Unlike ``ConfigDict.update_from_flattened_dict``, which adds unknown keys silently, a key
    the config does not have raises ``KeyError`` naming the valid keys.

    Example:
      >>> config = load_config("experiments/configs/mnist_rnn.py", {"num_epochs": 1})
    """
    config = load_config_file(path)
    valid = flatten_keys(config)
    unknown = sorted(set(overrides or {}) - set(valid))
    if unknown:
        raise KeyError(
            f"Unknown config key(s) {unknown} for {path}. Valid keys: {', '.join(valid)}"
        )
    config.update_from_flattened_dict(dict(overrides or {}))
    return config


def unknown_overrides(argv: list[str]) -> str | None:
    """A message naming mistyped ``--config.key`` flags and the valid keys, else None.

    ml_collections reports a mistyped key with a traceback from inside flag parsing; this check
    runs first and gives the list of valid keys instead.
    """
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    paths += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    overrides = [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if not paths or not overrides:
        return None
    valid = flatten_keys(load_config_file(paths[-1]))
    unknown = [key for key in overrides if key not in valid]
    if not unknown:
        return None
    return f"Unknown config key(s) {unknown} for {paths[-1]}. Valid keys: {', '.join(valid)}"


def quiet_library_logs(packages: tuple[str, ...] = ("orbax",)) -> None:
    """Drops INFO records that ``packages`` send through absl (orbax logs every save step)."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(
            f"/{p}/" in record.pathname for p in packages
        )

    logging.getLogger("absl").addFilter(keep)
