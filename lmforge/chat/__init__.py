"""How a conversation becomes text: the chat template and the prompt templates.

Modules: template (the chat layout, its special tokens, the Hugging Face Jinja form, the stop ids),
prompts (zero- and k-shot prompt templates from YAML/JSON). They import only lmforge.errors, so
generation, serving, evaluation, fine-tuning and export all build on them.
"""
