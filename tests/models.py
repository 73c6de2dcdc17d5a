"""The small torch models that several test files record, each defined once.

Every model takes 10 input features and has 4 classes (``CLASSES`` in the tests that use them). Their module
names are part of what the tests check (layer names, globs, the "Available: [...]" list of an unknown layer), so
they stay as they are.
"""

import torch
from torch import nn


class MLP(nn.Module):
    """fc1 (10 -> hidden) -> act1 -> fc2 (hidden -> 12) -> act2 -> out (12 -> 4), the activations ReLU modules.

    ``act1`` works in place: it changes fc1's output after fc1's forward hook ran (the recorder must have copied
    it by then).
    """

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(10, hidden)
        self.act1 = nn.ReLU(inplace=True)  # changes fc1's output in place after fc1's hook ran
        self.fc2 = nn.Linear(hidden, 12)
        self.act2 = nn.ReLU()
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


class DropoutMLP(nn.Module):
    """fc1 (10 -> 16) -> act1 (in place) -> drop (p 0.2) -> fc2 (16 -> 12) -> ReLU -> out (12 -> 4).

    The second ReLU is a function call, not a module: the modules are exactly fc1, act1, drop, fc2, out. The
    dropout draws from the RNG in training, so a probe pass that ran in training mode would shift its masks.
    """

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.act1 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.2)  # draws from the RNG in training: a probe pass must not shift its masks
        self.fc2 = nn.Linear(16, 12)
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        return self.out(torch.relu(self.fc2(self.drop(self.act1(self.fc1(x))))))


class TwoLayerMLP(nn.Module):
    """fc1 (10 -> 32) -> ReLU -> fc2 (32 -> 4): fc2 gives the logits; the ReLU is a function call."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
