"""coun-lab: an interactive machine-unlearning lab for ResNet-18 image classifiers."""

__version__ = "0.1.0"
