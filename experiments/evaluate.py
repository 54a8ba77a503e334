"""Evaluates the newest good checkpoint of a training workdir on the test split.

  python -m experiments.evaluate --workdir=runs/mnist_rnn

Prints the test metrics; writes confusion_matrix.png (classification tasks) and the task's report
figures into the workdir.
"""

from absl import app, flags

from rnnjax.train import launch
from rnnjax.train.evaluation import evaluate_workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.main.")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    launch.quiet_library_logs()
    result = evaluate_workdir(_WORKDIR.value)
    metrics = [f"{k} {v:.4f}" for k, v in result.items() if k.startswith("test_")]
    print(f"step {result['step']}  " + "  ".join(metrics))


if __name__ == "__main__":
    app.run(main)
