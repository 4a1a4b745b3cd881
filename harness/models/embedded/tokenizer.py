"""The embedded models' character-level tokenizer, built with `tokenizers` and saved in Hugging Face format."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
# Newline plus printable ASCII: every character the task suites write.
CHARACTERS = ("\n", *(chr(code) for code in range(32, 127)))


def build_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """One token per character, BOS prepended, left padding for batched generation.

    Text is never parsed for special tokens: a prompt that contains "<s>" or "</s>" is encoded
    character by character, like any other text, and decodes back to itself. With `vocab_size`, filler
    tokens `<|N|>` fill the vocabulary up to it (for a larger model's ids: they decode, text never
    encodes to them).
    """
    tokens = [*SPECIAL_TOKENS, *CHARACTERS]
    tokens += [f"<|{index}|>" for index in range(len(tokens), vocab_size or 0)]
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    # padding_side must be given to the constructor: set afterwards it is not saved.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=512 if vocab_size is None else 4096,
        split_special_tokens=True,
    )

