"""Using the model: `serve.generate` (KV-cache generation, sampling, streaming), `serve.config`.

Import from the submodules (`from lmforge.serve.generate import generate`); this package file
stays empty so reading a config, which imports serve.config, does not import torch.
"""
