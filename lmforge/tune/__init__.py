"""What comes after the base model: supervised fine-tuning (full and LoRA) and synthetic
instruction data from a teacher. The chat and prompt templates live in lmforge.chat, below
this package and serving.

Modules: formats (SFT record formats), pack (batches, packed forward), lora (adapters), sft (the
fine-tuning loop), reply (one chat reply), synth (Self-Instruct generation), stage (`lmforge
run`'s SFT stage), demo_data (builds the SFT demo set), cli.
"""
