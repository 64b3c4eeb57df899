"""The size of a training's network and the memory it takes, without importing torch (the web validates
requests with them)."""

from __future__ import annotations

OUTPUTS = 2  # logits: down, up
FLOAT_BYTES = 4
# Copies of the weights a training run keeps: the weights, their gradients, Adam's two moments, the best epoch's
# weights, and the snapshot a checkpoint is written from.
WEIGHT_COPIES = 6
# Per sample of a batch and unit of a layer: the activation, the ReLU's and the dropout's outputs, and gradients.
ACTIVATION_COPIES = 6


def parameter_count(inputs: int, hidden_sizes: list[int]) -> int:
    """The weights and biases of DirectionClassifier(inputs, hidden_sizes)."""
    widths = [inputs, *hidden_sizes, OUTPUTS]
    return sum((width_in + 1) * width_out for width_in, width_out in zip(widths, widths[1:]))


def training_memory_bytes(inputs: int, hidden_sizes: list[int], batch_size: int) -> int:
    """About what training the network takes beside its data: the weights' copies and one batch's activations
    (an estimate from above; the market data itself is bounded by its series)."""
    activations = batch_size * (inputs + sum(hidden_sizes) + OUTPUTS) * ACTIVATION_COPIES
    return FLOAT_BYTES * (WEIGHT_COPIES * parameter_count(inputs, hidden_sizes) + activations)
