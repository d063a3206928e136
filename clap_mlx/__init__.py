"""MLX port of LAION CLAP (HTSAT-fused audio encoder + RoBERTa text encoder)."""

from ._blas import preload_openblas

preload_openblas()  # must run before anything imports mlx.core
from .loading import load
from .anchors import Anchor, anchor
from .api import CLAP, classify, clear_model_cache, embed, get_model, release_thread, tag
from .audio_io import AudioInputError, load_audio
from .results import CLAPEmbeddingResult, ClassificationResult, TaggingResult
