"""Request/response layers, one module per policy key, all behind ``middleware.base.Layer``."""

from middleware.base import BuildContext, Call, Layer, PassThrough, Resources
from middleware.params import ParamsLayer

__all__ = ["BuildContext", "Call", "Layer", "ParamsLayer", "PassThrough", "Resources"]
