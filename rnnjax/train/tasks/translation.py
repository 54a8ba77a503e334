"""Encoder–decoder translation of toy languages: dates in words to ISO, or addition.

Trained with teacher forcing (cross-entropy on every target token); evaluated by greedy decoding
(``exact_match``: the whole output right) besides the teacher-forced loss and token accuracy.
The report adds beam search on a test subset (``beam.json``), sample outputs (``samples.txt``)
and, for an attention decoder, where it attended on one test example (``attention.png``).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend, no global figure state

from rnnjax import decoding, layers, models
from rnnjax._checks import check_size
from rnnjax.data import translation
from rnnjax.train import builders, losses
from rnnjax.train.tasks._task import Task

ENCODERS = ("rnn", "bidirectional")
SAMPLES_FILE, BEAM_FILE, ATTENTION_FILE = "samples.txt", "beam.json", "attention.png"


def build(config) -> Task:
    """``config.data`` picks the problem and sizes, ``config.model`` the encoder–decoder and
    ``config.decoding`` the report's beam search (see ``experiments/configs/common.py``)."""
    _check_decoding(config.decoding)  # the report runs once training ends: check it first
    for key in ("train_size", "test_size"):
        check_size(f"data.{key}", config.data[key])
    problem = translation.problem(config.data.name, max_digits=config.data.max_digits)
    train, test = translation.splits(
        problem, config.data.train_size, config.data.test_size, seed=config.data.seed
    )
    model = encoder_decoder(config.model, problem)

    def forward(params, batch, key=None):
        return model.apply(
            params,
            batch["inputs"],
            batch["decoder_inputs"],
            src_lengths=batch["source_lengths"],
            tgt_lengths=batch["target_lengths"],
            key=key,
        )

    def evaluate(params, batch):
        _, metrics = losses.sequence_xent(forward(params, batch), batch)
        tokens, lengths = _decode(model, params, batch, problem.target_width)
        return metrics | {"exact_match": exact_match(tokens, lengths, batch)}

    def report(params, workdir):
        write_report(model, params, problem, test, config.decoding, workdir)
        if config.model.attention != "none":
            plot_attention(model, params, problem, test, workdir / ATTENTION_FILE)

    loss = losses.sequence_xent
    return Task(train, test, model, forward, loss, evaluate, report, 0, "exact_match")


def _check_decoding(decoding_config) -> None:
    for key in ("beam_size", "beam_examples"):
        check_size(f"decoding.{key}", decoding_config[key])
    samples = decoding_config.samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f"decoding.samples must be an int >= 0, got {samples!r}")


def encoder_decoder(model_config, problem: translation.Problem) -> models.EncoderDecoder:
    """Embeddings, a one-layer encoder ("rnn" or "bidirectional") and decoder of
    ``model_config.cell``, optionally with attention (``attention``, ``input_feeding``)."""
    if model_config.encoder not in ENCODERS:
        raise ValueError(f"model.encoder must be one of {ENCODERS}, got {model_config.encoder!r}")
    cell = builders.make_cell(model_config.cell, model_config.units)
    encoder = layers.rnn(cell) if model_config.encoder == "rnn" else layers.bidirectional(cell)
    return models.encoder_decoder(
        encoder,
        builders.make_cell(model_config.cell, model_config.units),
        src_embed=layers.embed(problem.source_vocab.size, model_config.embed_size),
        tgt_embed=layers.embed(problem.target_vocab.size, model_config.embed_size),
        head=layers.dense(problem.target_vocab.size),
        attention=model_config.attention,
        input_feeding=model_config.input_feeding,
    )


def exact_match(tokens, lengths, batch) -> jax.Array:
    """1.0 where decoded ``tokens [B, L]`` (of ``lengths``, END excluded) equal the target."""
    body = batch["target_lengths"] - 1
    padding = jnp.arange(tokens.shape[1]) >= body[:, None]
    same = jnp.all((tokens == batch["targets"]) | padding, axis=1)
    return (same & (lengths == body)).astype(jnp.float32)


def _decode(model, params, batch, max_length: int, beam_size: int = 0):
    """Greedy tokens and lengths, or the best of a beam of ``beam_size`` if it is > 0."""
    options = dict(
        src_lengths=batch["source_lengths"],
        start_token=translation.START,
        end_token=translation.END,
        max_length=max_length,
    )
    if beam_size:
        tokens, lengths, _ = decoding.beam_search(
            model, params, batch["inputs"], beam_size=beam_size, **options
        )
        return tokens, lengths
    return decoding.greedy(model, params, batch["inputs"], **options)


def write_report(model, params, problem, test, decoding_config, workdir) -> None:
    """Greedy and beam exact match on the first ``beam_examples`` test examples (``beam.json``)
    and the first ``samples`` of them as source, target, greedy and beam outputs
    (``samples.txt``)."""
    n = min(decoding_config.beam_examples, len(test["inputs"]))
    subset = {k: v[:n] for k, v in test.items()}
    greedy = _decode(model, params, subset, problem.target_width)
    beam = _decode(model, params, subset, problem.target_width, decoding_config.beam_size)
    scores = {
        "examples": n,
        "beam_size": decoding_config.beam_size,
        "greedy_exact_match": _mean(exact_match(*greedy, subset)),
        "beam_exact_match": _mean(exact_match(*beam, subset)),
    }
    (workdir / BEAM_FILE).write_text(json.dumps(scores, indent=2) + "\n")
    rows = zip(
        problem.source_vocab.decode(subset["inputs"]),
        problem.target_vocab.decode(subset["targets"]),
        problem.target_vocab.decode(np.asarray(greedy[0])),
        problem.target_vocab.decode(np.asarray(beam[0])),
        strict=True,
    )
    lines = [f"{'source':<20} {'target':<12} {'greedy':<12} beam {decoding_config.beam_size}"]
    lines += [
        f"{s:<20} {t:<12} {g:<12} {b}" for s, t, g, b in list(rows)[: decoding_config.samples]
    ]
    (workdir / SAMPLES_FILE).write_text("\n".join(lines) + "\n")


def attention_map(model, params, example: dict) -> np.ndarray:
    """The attention weights ``[target steps, source steps]`` of one example, teacher-forced on
    its target (each row: where the decoder looked to emit that target token)."""
    batch = {k: v[None] for k, v in example.items()}
    carry = model.encode(params, batch["inputs"], batch["source_lengths"])

    def step(carry, tokens):
        carry, _ = model.decode_step(params, carry, tokens)
        return carry, carry.weights[0]

    _, weights = jax.lax.scan(step, carry, batch["decoder_inputs"].T)
    return np.asarray(weights)[: example["target_lengths"], : example["source_lengths"]]


def plot_attention(model, params, problem, test, out_path) -> None:
    """Draws the first test example's ``attention_map`` with its characters on the axes."""
    example = {k: v[0] for k, v in test.items()}
    weights = attention_map(model, params, example)
    source = problem.source_vocab.decode(example["inputs"][None])[0]
    target = problem.target_vocab.decode(example["targets"][None])[0] + "⏎"  # ⏎: END
    fig = Figure(figsize=(0.3 * len(source) + 2, 0.3 * len(target) + 1.5))
    ax = fig.subplots()
    ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source)), list(source))
    ax.set_yticks(range(len(target)), list(target))
    ax.set_xlabel("source")
    ax.set_ylabel("emitted")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)


def _mean(values) -> float:
    return float(np.mean(np.asarray(values), dtype=np.float64))
