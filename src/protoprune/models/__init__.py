"""Model builders: torchvision classifiers and ProtoPNet."""

from .backbones import ARCHITECTURES, Features, build_classifier, feature_extractor

__all__ = ["ARCHITECTURES", "Features", "build_classifier", "feature_extractor"]
