"""Evaluates the newest good checkpoint of a training workdir on the test split.

  python -m experiments.evaluate --workdir=runs/mnist_rnn [--manual_dir=DIR] [--data_dir=DIR]

Prints the test metrics; writes confusion_matrix.png (classification tasks) and the task's report
figures into the workdir. The data is read where the run's config says, unless ``--manual_dir``
or ``--data_dir`` give where it is now.
"""

from absl import app, flags

from rnnjax.train import launch
from rnnjax.train.evaluation import evaluate_workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.main.")
flags.mark_flag_as_required("workdir")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The data's files now (config.data).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The prepared datasets now (config.data).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    launch.quiet_library_logs()
    result = evaluate_workdir(
        _WORKDIR.value, manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value
    )
    metrics = [f"{k} {v:.4f}" for k, v in result.items() if k.startswith("test_")]
    print(f"step {result['step']}  " + "  ".join(metrics))


if __name__ == "__main__":
    app.run(main)
