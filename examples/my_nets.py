"""Models of your own for `resgrow train --arch my_nets:FUNCTION` (run with PYTHONPATH=examples).

    PYTHONPATH=examples resgrow train --arch my_nets:small_cnn --data path/to/cifar10-jpeg.zip --out runs/cnn
    PYTHONPATH=examples resgrow train --arch my_nets:slim_resnet --method lipgrow --data ... --out runs/slim

resgrow calls the function with `num_classes=N` (N from the data) and trains what it returns on its
fast path. Any `nn.Module` trains at a fixed size; one built from resgrow's blocks (a `ResNet` of an
`ArchSpec`) can also be grown by the depth methods.
"""

from torch import nn

from resgrow.models import ArchSpec, ResNet


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A plain (non-residual) 3-stage CNN: conv-BN-ReLU pairs, max-pooling between stages."""
    layers, cin = [], 3
    for i, width in enumerate((32, 64, 128)):
        if i:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def slim_resnet(num_classes: int = 10) -> ResNet:
    """A half-width ResNet-26 (4-4-4 blocks, 8-16-32 channels): its own spec, growable from 1-1-1."""
    return ResNet(ArchSpec("basic", (4, 4, 4), (8, 16, 32), num_classes=num_classes, shortcut="A", stem_width=8))
