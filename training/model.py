from __future__ import annotations

import torch
from torch import nn

from training.sizes import OUTPUTS


class DirectionClassifier(nn.Module):
    """An MLP over bar features: logits for down / up."""

    def __init__(self, inputs: int, hidden_sizes: list[int], dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, OUTPUTS))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
