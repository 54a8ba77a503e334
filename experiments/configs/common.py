"""The settings every config shares; each config file overrides a few."""

import ml_collections


def base_config(task: str) -> ml_collections.ConfigDict:
    """Training settings of every task: Adam with a cosine-decayed rate, checkpoints, logging,
    devices. The task's config adds ``data`` and ``model``."""
    config = ml_collections.ConfigDict()
    config.task = task  # one of rnnjax.train.tasks.TASKS
    config.seed = 0
    config.num_epochs = 20
    config.batch_size = 150
    config.learning_rate = 1e-3
    config.lr_schedule = "cosine"  # cosine: from learning_rate down to 0 over the run | constant
    config.grad_clip_norm = 0.0  # > 0 clips gradients by global norm
    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 3
    config.log_every_steps = 50
    config.progress = True  # tqdm bar (shown only on a terminal)

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = 1  # devices the batch is split over: 1 = one device, -1 = all of them
    config.mesh.fsdp = False  # also split params and optimizer state over them (large models)
    return config


def classifier_config(**model) -> ml_collections.ConfigDict:
    """Defaults of the textbook experiment; ``model`` overrides entries of ``config.model``."""
    config = base_config("classification")
    config.data = ml_collections.ConfigDict()
    config.data.name = "mnist"  # mnist | fashion_mnist | any prepared tfds image dataset
    config.data.manual_dir = ""  # local IDX files, for offline use
    config.data.data_dir = ""  # tfds data_dir; "" = tfds' default
    config.data.train_limit = 0  # > 0 keeps only the first N training examples
    config.data.test_limit = 0
    config.data.sequence = "rows"  # rows: 28 steps of 28 pixels | pixels: 784 steps of 1
    config.data.permute = False  # with pixels: one fixed random pixel order (permuted MNIST)
    config.data.permutation_seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.cell = "simple"  # simple | lstm | gru | indrnn | min_gru | min_lstm | lru
    config.model.units = 150
    config.model.num_layers = 1
    config.model.dropout = 0.0  # between stacked layers, in training only
    config.model.pool = "last"  # last | mean | max
    config.model.cell_options = {}
    config.model.update(model)
    return config
