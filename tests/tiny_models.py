"""Tiny random-config models and toy data for unit tests (seconds, no downloads).

Import from any test as ``from tests.tiny_models import tiny_bert_dir`` (the repository
root is on ``sys.path`` under pytest).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from crosslm_secure.config import TaskConfig
from crosslm_secure.data.records import Example

SENTIMENT_WORDS: dict[int, list[str]] = {
    0: ["bad", "awful", "terrible", "worse", "pain", "nausea", "horrible", "useless"],
    1: ["okay", "fine", "average", "mixed", "moderate", "unsure", "normal", "mild"],
    2: ["good", "great", "excellent", "helped", "better", "relief", "amazing", "love"],
}
"""Words that make the toy classes separable; class ``c % 3`` uses ``SENTIMENT_WORDS[c % 3]``."""

FILLER_WORDS = ["the", "drug", "medicine", "was", "it", "i", "my", "took", "for", "and", "this"]


def tiny_vocab() -> list[str]:
    """Special tokens, the toy words, single letters and ``##`` letters (so any text encodes)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for ws in SENTIMENT_WORDS.values() for w in ws} | set(FILLER_WORDS))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    punctuation = list(".,!?'\"-:;()&/#")
    pieces = [f"##{c}" for c in letters + digits]
    return specials + words + letters + digits + punctuation + pieces


def tiny_bert_dir(
    tmp_path: Path,
    num_labels: int = 3,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 128,
    seed: int = 0,
    name: str = "tiny-bert",
) -> Path:
    """Save a random-weight BERT sequence classifier and its tokenizer; return the folder.

    Args:
        tmp_path: parent folder (pytest's ``tmp_path``).
        num_labels: classes of the saved head.
        hidden_size: hidden width (a multiple of ``heads``).
        layers: transformer layers.
        heads: attention heads.
        max_positions: longest sequence the model accepts.
        seed: seeds the random weights.
        name: sub-folder name (use different names for several models in one test).

    Returns:
        A folder that ``from_pretrained`` (and ``load_slm`` with ``model=<folder>``) reads.
    """
    folder = Path(tmp_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocab()) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tiny_vocab()),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_positions,
        num_labels=num_labels,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    return folder


def separable_examples(n_per_label: int, num_labels: int = 3, *, seed: int = 0) -> list[Example]:
    """Toy reviews whose label is given away by their sentiment words (easy to learn).

    Args:
        n_per_label: examples per class.
        num_labels: classes (class ``c`` uses the word list ``c % 3``).
        seed: seeds word choice and order.
    """
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for label in range(num_labels):
        words = SENTIMENT_WORDS[label % 3]
        for i in range(n_per_label):
            picks = torch.randint(len(words), (2,), generator=generator).tolist()
            fill = torch.randint(len(FILLER_WORDS), (3,), generator=generator).tolist()
            text = " ".join(
                [FILLER_WORDS[fill[0]], words[picks[0]], FILLER_WORDS[fill[1]], words[picks[1]]]
                + [FILLER_WORDS[fill[2]]]
            )
            examples.append(Example(uid=f"toy:{label}:{i}", text=text, label=label))
    order = torch.randperm(len(examples), generator=generator).tolist()
    return [examples[i] for i in order]


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_llm_dir(tmp_path: Path, *, chat: bool = True, seed: int = 0, name: str = "tiny-llm") -> Path:
    """Save a random-weight Llama causal LM with a small byte-level BPE tokenizer; return the folder.

    The tokenizer is trained on the default task's prompts and the toy sentiment words, so
    label words are single tokens; any text still encodes (byte-level).

    Args:
        tmp_path: parent folder.
        chat: give the tokenizer a ChatML chat template (as instruct models have).
        seed: seeds the random weights.
        name: sub-folder name.
    """
    folder = Path(tmp_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    task = TaskConfig()
    words = [w for ws in SENTIMENT_WORDS.values() for w in ws] + FILLER_WORDS
    corpus = [task.classify_template, *task.generation_instructions, " ".join(words), *task.labels]
    corpus += [" ".join(task.labels)] * 20
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        corpus * 5,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=["<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        # Large enough that a LoRA update can make the output distribution peaked (with the
        # default 0.02 the logits stay near-uniform and a tuning test could not fail usefully).
        initializer_range=0.5,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def tiny_llm_logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    """The LLM's logits on one fixed sentence: compares two models' weights through their outputs."""
    encoded = tokenizer(["the drug helped my pain"], return_tensors="pt")
    with torch.no_grad():
        return model(**encoded).logits


def write_sentiment_csv(path: Path, rows: int) -> Path:
    """A toy ``note,outcome`` CSV: row ``i`` has label ``i % 3`` and two of its sentiment words."""
    import csv

    labels = ["negative", "neutral", "positive"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["note", "outcome"])
        for i in range(rows):
            words = SENTIMENT_WORDS[i % 3]
            writer.writerow([f"the drug was {words[i % len(words)]} and {words[(i + 3) % len(words)]}", labels[i % 3]])
    return path
