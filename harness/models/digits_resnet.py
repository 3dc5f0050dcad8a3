"""A small residual CNN from torchvision's BasicBlock, sized for 32x32 upsampled digits."""

import torch.nn as nn
from torchvision.models.resnet import BasicBlock

from harness.models.registry import DIGITS_CLASSES, DIGITS_INPUT_SHAPE


def _stage(inplanes: int, planes: int, stride: int) -> BasicBlock:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    return BasicBlock(inplanes, planes, stride=stride, downsample=downsample)


class DigitsResNet(nn.Module):
    def __init__(self, num_classes: int = DIGITS_CLASSES, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(DIGITS_INPUT_SHAPE[0], width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(_stage(width, width, 1), _stage(width, width, 1))
        self.layer2 = _stage(width, 2 * width, 2)
        self.layer3 = _stage(2 * width, 4 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))
