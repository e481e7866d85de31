"""The reward head: a scalar read from the decoder's last hidden state at every position."""

from __future__ import annotations

import torch
from torch import nn

from rewardlab.choices import HEAD_CHOICES
from rewardlab.config import RewardModelSpec
from rewardlab.errors import UserError


class RewardHead(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        kind: str = RewardModelSpec.head,  # the defaults: train-rm's (declared once, on its config fields)
        mlp_hidden: int = RewardModelSpec.head_hidden,
        dropout: float = RewardModelSpec.head_dropout,
    ):
        super().__init__()
        if kind not in HEAD_CHOICES:
            raise UserError(f"unknown reward head '{kind}' (choose from {', '.join(HEAD_CHOICES)})")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "linear":
            self.net = nn.Linear(hidden_size, 1, bias=False)
            nn.init.normal_(self.net.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        else:
            self.net = nn.Sequential(nn.Linear(hidden_size, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(self.dropout(hidden)).squeeze(-1)

    @torch.no_grad()
    def zero_output_(self) -> RewardHead:
        """Zero the output layer, so the head reads 0 everywhere while its input layers (mlp) keep their weights."""
        output = self.net if isinstance(self.net, nn.Linear) else self.net[-1]
        output.weight.zero_()
        if output.bias is not None:
            output.bias.zero_()
        return self

    @torch.no_grad()
    def reinit_output_(self, scale: float, generator: torch.Generator | None = None) -> RewardHead:
        """Redraw the output layer as N(0, (scale / sqrt(fan_in))^2) with a zero bias: a fresh value head whose input
        layers (and the backbone below) still get gradients through it, unlike a zeroed one."""
        output = self.net if isinstance(self.net, nn.Linear) else self.net[-1]
        fresh = torch.randn(output.weight.shape, generator=generator, dtype=torch.float32) * (scale / output.in_features**0.5)
        output.weight.copy_(fresh.to(output.weight))
        if output.bias is not None:
            output.bias.zero_()
        return self

    def linear_weight(self) -> torch.Tensor:
        """The (1, H) weight of a `linear` head: what `AutoModelForSequenceClassification.score` holds. An `mlp` head has
        no single-layer equivalent."""
        if self.kind != "linear":
            raise UserError(
                f"the '{self.kind}' reward head cannot be represented by AutoModelForSequenceClassification "
                "(its score layer is a single bias-free linear layer); train with --head linear to export"
            )
        return self.net.weight
