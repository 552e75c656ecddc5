"""What comes after the base model: supervised fine-tuning (full and LoRA), synthetic instruction
data from a teacher, prompt templates, and the chat template shared with generation and serving.

Modules: template (chat layout), formats (SFT record formats), pack (batches, packed forward),
lora (adapters), sft (the fine-tuning loop), reply (one chat reply), prompts (zero/k-shot
templates), synth (Self-Instruct generation), stage (`lmforge run`'s SFT stage), demo_data
(builds the SFT demo set), cli.
"""
