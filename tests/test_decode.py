"""The decoding step (lmforge/model/decode.py): the model's own cached forward, eager or compiled
(inductor on the CPU gives the eager tokens and stops compiling once lengths are symbolic); no
private torch API anywhere in lmforge. Tiny random models built here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.model.decode import DecodeStep
from lmforge.serve.batching import generate_batch
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate_tokens

GREEDY = {"temperature": 0.0, "top_k": None, "top_p": None}
PROMPTS = [[5, 9, 2, 7, 11, 3, 8], [4], [13, 1, 6]]  # lengths 7, 1, 3: left-padded in a batch


def tiny(**kw) -> Transformer:
    torch.manual_seed(kw.pop("seed", 0))
    # init_std 0.2: logits spread wide enough that float rounding never flips a greedy argmax
    cfg = {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_embd": 32, "n_head": 4, "init_std": 0.2}
    return Transformer(ModelConfig(**{**cfg, **kw})).eval()


def test_generation_decodes_through_a_decoder_only_when_compiling():
    model = tiny()
    assert not DecodeStep.wanted(model)  # eager: generation calls the model's cached forward itself
    assert DecodeStep.wanted(model, compile=True)
    assert not DecodeStep.wanted(tiny(kind="encoder-decoder"), compile=True)


def test_decoder_refuses_other_models():
    with pytest.raises(LmforgeError, match="decoder models"):
        DecodeStep(tiny(kind="encoder-decoder"), None)
    assert DecodeStep.supports(tiny()) and not DecodeStep.supports(tiny(kind="encoder"))


def private_torch_uses(path: Path) -> list[str]:
    """`torch._x...`, `torch.ops.mkldnn...` and imports from private torch modules in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
        )
        found += [
            m for m in modules if m.split(".")[0] == "torch" and any(p.startswith("_") for p in m.split("."))
        ]
        if isinstance(node, ast.Attribute):
            chain, n = [], node
            while isinstance(n, ast.Attribute):
                chain, n = [n.attr, *chain], n.value
            private = any(c.startswith("_") and not c.startswith("__") for c in chain) or chain[:2] == [
                "ops",
                "mkldnn",
            ]
            if isinstance(n, ast.Name) and n.id == "torch" and private:
                found.append(f"{node.lineno}: torch.{'.'.join(chain)}")
    return found


def test_lmforge_uses_no_private_torch_api():
    """Issue 15 part 2: decoding, checkpointing and parallelism use torch's public APIs only."""
    root = Path(__file__).parents[1] / "lmforge"
    uses = {str(p.relative_to(root)): private_torch_uses(p) for p in root.rglob("*.py")}
    assert {k: v for k, v in uses.items() if v} == {}


def test_the_private_api_scan_finds_what_it_should(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import torch\nfrom torch._dynamo import utils\nfrom torch.distributed._composable import x\n"
        "torch.ops.mkldnn._linear_pointwise(a)\ntorch._C._foo\ntorch.nn.functional.linear(a, b)\n"
        "torch.__version__\n"
    )
    assert sorted(private_torch_uses(src)) == sorted(
        [
            "torch._dynamo",
            "torch.distributed._composable",
            "4: torch.ops.mkldnn._linear_pointwise",
            "4: torch.ops.mkldnn",
            "5: torch._C._foo",
            "5: torch._C",
        ]
    )


def test_greedy_generation_equals_the_models_cached_forward():
    """generate_tokens decodes through a DecodeStep; the tokens are those of the model's own loop."""
    model = tiny(pos="rope", n_kv_head=2)
    prompt = PROMPTS[0]
    reference = []
    with torch.inference_mode():
        cache = model.new_kv_cache(1, len(prompt) + 12)
        logits, _ = model(torch.tensor([prompt]), kv_cache=cache)
        for _ in range(12):
            reference.append(int(logits[0, -1].argmax()))
            logits, _ = model(torch.tensor([[reference[-1]]]), kv_cache=cache)
    assert list(generate_tokens(model, prompt, SampleConfig(max_new_tokens=12, **GREEDY))) == reference


@pytest.mark.slow
def test_compiled_decoding_gives_eager_tokens_and_stops_compiling():
    """sample.compile=true: torch.compile (inductor on the CPU) of the model's cached forward; the
    tokens equal eager decoding, and once the lengths are symbolic the same batch size compiles
    no more, whatever the prompt lengths."""
    torch._dynamo.reset()
    model = tiny(pos="rope", n_kv_head=2)
    eager, compiled = (SampleConfig(max_new_tokens=10, compile=c, **GREEDY) for c in (False, True))
    assert generate_batch(model, PROMPTS, compiled) == generate_batch(model, PROMPTS, eager)
    other = [[1, 2], [3, 4, 5, 6, 7, 8], [9]]
    assert generate_batch(model, other, compiled) == generate_batch(model, other, eager)
    with torch.compiler.set_stance("fail_on_recompile"):  # batch 3 again, new lengths: no compiling
        again = [[6, 1, 6], [2], [8, 8, 8, 8, 8]]
        assert generate_batch(model, again, compiled) == generate_batch(model, again, eager)
    assert list(generate_tokens(model, PROMPTS[0], compiled)) == list(
        generate_tokens(model, PROMPTS[0], eager)
    )


@pytest.mark.slow
def test_served_model_with_compile_answers_as_without(tmp_path):
    """`lmforge serve/chat --compile` sets ServedModel.compile: every request decodes compiled."""
    from torch._dynamo.utils import counters

    from lmforge.serve.engine import ServedModel
    from lmforge.tiny import make_tiny_run

    served = ServedModel.load(str(make_tiny_run(tmp_path / "run", seed=0, block_size=64)))
    ids = served.text_ids("the quick brown")
    cfg = SampleConfig(max_new_tokens=8, **GREEDY)
    plain = served.complete(ids, cfg, stop_ids=[])
    graphs = counters["stats"]["unique_graphs"]
    served.compile = True
    assert served.complete(ids, cfg, stop_ids=[]).token_ids == plain.token_ids
    assert counters["stats"]["unique_graphs"] > graphs  # the compiled step ran


def test_lora_wrapped_models_generate_with_their_adapter():
    """An unmerged LoRA adapter adds its update in forward; decoding is the model's own forward, so
    generation sees it, and merging it gives the same tokens."""
    from lmforge.tune.config import LoraConfig
    from lmforge.tune.lora import apply_lora, merge_lora

    model = tiny(pos="rope")
    cfg = SampleConfig(max_new_tokens=8, **GREEDY)
    base = generate_batch(model, PROMPTS, cfg)
    apply_lora(model, LoraConfig(rank=2, targets=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero update
    adapted = generate_batch(model, PROMPTS, cfg)
    assert adapted != base
    merge_lora(model)
    assert generate_batch(model, PROMPTS, cfg) == adapted
