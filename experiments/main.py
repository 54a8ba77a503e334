"""Trains a recurrent model from a config file; rerun the same command to resume.

  python -m experiments.main --config=experiments/configs/mnist_rnn.py --workdir=runs/mnist \
      [--config.num_epochs=1 --config.data.manual_dir=../shared/data/mnist ...]

On all devices: ``--config.mesh.data=-1``. One process per host, each with the same command:
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (or the environment
variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or ``--detect_cluster``).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from rnnjax.train import distributed, launch, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_ADDRESS = flags.DEFINE_string("coordinator_address", None, "Process 0's HOST:PORT.")
_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1.")
_DETECT = flags.DEFINE_bool(
    "detect_cluster", False, "Let JAX detect the processes (Cloud TPU, SLURM, Open MPI, GKE)."
)
flags.mark_flags_as_required(["config", "workdir"])
flags.register_validator(  # `--workdir=$RUN` with RUN unset would train into the current directory
    "workdir",
    lambda path: path is None or bool(path.strip()),
    "--workdir must name a directory, got an empty path",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    # All before anything touches a device.
    distributed.prefer_cpu_vector_width(config.cpu_vector_width)
    distributed.split_cpu(config.mesh.cpu_devices, config.batch_size)
    distributed.initialize(
        _ADDRESS.value, _PROCESSES.value, _PROCESS_ID.value, detect_cluster=_DETECT.value
    )
    launch.quiet_library_logs()
    train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    if message := launch.unknown_overrides(sys.argv[1:]):
        sys.exit(message)
    app.run(main)
