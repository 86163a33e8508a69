"""ResNet-18 built from torchvision's class, so state-dict names are torchvision's own.

The CIFAR stem (3x3 stride-1 conv1, no max-pool) is the default, as in the CoUn paper and the
OPTML-Group repos; the ImageNet stem (7x7 stride-2 conv1 + max-pool) is an option.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

STEMS = ("cifar", "imagenet")


class ResNet18(ResNet):  # type: ignore[misc]  # torchvision ships no type information
    def __init__(self, num_classes: int, in_channels: int = 3, stem: str = "cifar"):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.stem, self.in_channels, self.num_classes = stem, in_channels, num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate 512-d pooled features (input of fc)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.features(x)
        return self.fc(z), z


def build(num_classes: int, in_channels: int = 3, stem: str = "cifar") -> ResNet18:
    return ResNet18(num_classes=num_classes, in_channels=in_channels, stem=stem)
