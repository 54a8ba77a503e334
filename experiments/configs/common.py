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
    config.steps_per_call = 10  # training steps per jitted call (one lax.scan); same results
    config.progress = True  # tqdm bar (shown only on a terminal)

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # devices the batch is split over: -1 = all of them, 1 = one device
    config.mesh.cpu_devices = -1  # CPU devices made of the cores: -1 = one per core (launcher)
    config.mesh.fsdp = False  # also split params and optimizer state over them (large models)
    config.cpu_vector_width = 512  # XLA:CPU's SIMD width in bits (launcher); 0 = XLA's (256)
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
    config.model.compute_dtype = "float32"  # bfloat16: mixed-precision matmuls (every cell)
    config.model.update(model)
    return config


def sequential_mnist_config(*, permute: bool, **model) -> ml_collections.ConfigDict:
    """Sequential MNIST: 784 steps of one pixel (``permute``: in one fixed random order), a
    recurrent classifier, Adam with gradients clipped to norm 1, batch 128."""
    config = classifier_config(**model)
    config.data.sequence = "pixels"
    config.data.permute = permute
    config.batch_size = 128
    config.grad_clip_norm = 1.0
    config.checkpoint_every_steps = 100
    config.log_every_steps = 20
    return config


def recurrent_model(**model) -> ml_collections.ConfigDict:
    """``config.model`` for ``builders.recurrent_body`` (the generated-data tasks); ``model``
    overrides entries or adds ``pool`` for ``builders.classifier``."""
    config = ml_collections.ConfigDict()
    config.cell = "lstm"  # simple | lstm | gru | indrnn | min_gru | min_lstm | lru
    config.units = 128
    config.num_layers = 1
    config.dropout = 0.0  # between stacked layers, in training only
    config.cell_options = {}  # keyword options of the cell factory
    config.compute_dtype = "float32"  # bfloat16: mixed-precision matmuls (every cell)
    config.update(model)
    return config


def adding_config(**model) -> ml_collections.ConfigDict:
    """The adding problem (``rnnjax.data.memory.adding_problem``) at T = 100: batches of 50 (as
    in the papers) from a fixed training set, gradients clipped to norm 1."""
    config = base_config("adding")
    config.batch_size = 50
    config.grad_clip_norm = 1.0
    config.data = ml_collections.ConfigDict()
    config.data.length = 100  # T: 100 | 200 | 500 in the papers
    config.data.train_size = 10_000  # 200 steps an epoch
    config.data.test_size = 2_000
    config.data.seed = 0  # train from (seed, 0), test from (seed, 1)
    config.model = recurrent_model(**model)
    return config


def reber_config(task: str, *, train_size: int, test_size: int, **model):
    """Embedded Reber strings (``rnnjax.data.grammar``) for ``task`` ("reber" or "reber_lm"):
    a GRU of 30 units, 20 epochs of batches of 32, Adam 3e-3; ``model`` adds entries."""
    config = base_config(task)
    config.num_epochs = 20
    config.batch_size = 32
    config.learning_rate = 3e-3
    config.data = ml_collections.ConfigDict()
    config.data.train_size = train_size
    config.data.test_size = test_size
    config.data.seed = 0  # train from (seed, 0), test from (seed, 1)
    config.model = recurrent_model(cell="gru", units=30, **model)
    return config


def translation_config(problem: str, **model) -> ml_collections.ConfigDict:
    """An encoder–decoder task (``rnnjax.train.tasks.translation``): "dates" or "addition"."""
    config = base_config("translation")
    config.batch_size = 128
    config.data = ml_collections.ConfigDict()
    config.data.name = problem  # dates: "April 22, 2019" -> "2019-04-22" | addition: "12+345"
    config.data.max_digits = 3  # addition: digits per operand
    config.data.train_size = 20_000
    config.data.test_size = 2_000  # none of them a training source
    config.data.seed = 0  # train from (seed, 0), test from (seed, 1)
    config.model = ml_collections.ConfigDict()
    config.model.cell = "lstm"  # for the encoder and the decoder
    config.model.units = 128
    config.model.embed_size = 32
    config.model.encoder = "rnn"  # rnn | bidirectional
    config.model.attention = "none"  # none | luong | bahdanau
    config.model.input_feeding = False  # with attention: feed back the attentional state
    config.model.update(model)
    config.decoding = ml_collections.ConfigDict()  # the report's beam search
    config.decoding.beam_size = 4
    config.decoding.beam_examples = 1000  # test examples decoded by greedy and by beam search
    config.decoding.samples = 10  # lines of samples.txt
    return config
