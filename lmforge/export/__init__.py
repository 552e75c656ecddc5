"""Hugging Face interop: lmforge models out as transformers folders, pretrained models in as runs.

    from lmforge.export import export_run, import_hf
    export_run("runs/tiny", "hf/tiny")          # Llama or GPT-2 folder, tokenizer + chat template
    import_hf("path/to/hf-model", "runs/imported")   # a run directory every stage reads

Modules: arch (which architecture, tensor bookkeeping), llama and gpt2 (one mapping each),
hf_tokenizer (tokenizer files out, id permutation in), hf_export, hf_import (also `resolve_init`
for `train.init_from: hf:DIR`), cli. transformers is needed only to load the result, not to write it.
"""

from lmforge.export.arch import ExportError, architecture
from lmforge.export.hf_export import export_model, export_run
from lmforge.export.hf_import import apply_init, import_hf, resolve_init

__all__ = ["ExportError", "apply_init", "architecture", "export_model", "export_run", "import_hf", "resolve_init"]
