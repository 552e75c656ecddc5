"""Hugging Face interop: lmforge models out as transformers folders, pretrained models in as runs.

    from lmforge.export import export_run, import_hf
    export_run("runs/tiny", "hf/tiny")          # Llama or GPT-2 folder, tokenizer + chat template
    import_hf("path/to/hf-model", "runs/imported")   # a run directory every stage reads

Modules: arch (which architecture), mapping (tensor bookkeeping both directions share), llama and gpt2
(one mapping each), hf_tokenizer (tokenizer files out, id permutation in), hf_export, hf_import
(also `resolve_init` for `train.init_from: hf:DIR`), cli. transformers is needed only to load the result,
not to write it.
"""

import importlib

# Imported on first use so the CLI's start-up doesn't pay for torch.
_EXPORTS = {
    "ExportError": "mapping",
    "architecture": "arch",
    "export_model": "hf_export",
    "export_run": "hf_export",
    "apply_init": "hf_import",
    "import_hf": "hf_import",
    "resolve_init": "hf_import",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lmforge.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lmforge.export' has no attribute {name!r}")


__all__ = [
    "ExportError",
    "apply_init",
    "architecture",
    "export_model",
    "export_run",
    "import_hf",
    "resolve_init",
]
