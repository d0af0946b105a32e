"""Tiny randomly initialised sequence classifiers, and transformers' probabilities on them.

    /tmp/refvenv/bin/pip install torch transformers tokenizers safetensors
    /tmp/refvenv/bin/python tests/reference/tiny_classifiers.py

Writes fixtures/toxicity/tiny-roberta/ (RobertaForSequenceClassification, byte-level BPE
trained here on a few hundred wiki sentences, id2label neutral/toxic) and
fixtures/toxicity/tiny-bert/ (BertForSequenceClassification, WordPiece, id2label
non-toxic/toxic), each with reference.json: per text the token ids transformers feeds
the model (padding=True, truncation=True, max_length = the model's usable positions),
the logits, and the toxic class's softmax and sigmoid probabilities. tests/toxicity.rs
checks candle's forward pass against these to 1e-4.
"""

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers, decoders
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaTokenizerFast,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/toxicity"

# A small training corpus for the tokenizers: fixed sentences, no asset needed.
CORPUS = [
    "The game takes place during the Second Europan War.",
    "Troops are divided into five classes: scouts, engineers and lancers.",
    "You are a stupid idiot and everyone hates you.",
    "I love puppies, sunshine and long walks on the beach.",
    "What the hell is wrong with you people?",
    "The committee approved the budget on Tuesday after a long debate.",
    "Shut up, you worthless piece of garbage.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Please pass the salt and pepper.",
    "That movie was absolutely terrible, a complete waste of time.",
    "Café, naïve, résumé and Ünïcödé text with “quotes”.",
    "Numbers like 1992, 2005 and 3.14 appear in text.",
] * 20

TEXTS = [
    "",
    "Hello world",
    "You are a stupid idiot and everyone hates you.",
    "I love puppies and sunshine.",
    "The committee approved the budget.",
    "Café naïve “quotes” 😀",
    "unseenwordsxyz qqq",
    "What the hell?!",
    " leading and trailing spaces ",
    # Longer than the models' positions: exercises truncation.
    " ".join(["This sentence repeats to overflow the tiny model's positions."] * 12),
    "Shut up, you worthless piece of garbage. " * 3,
]


def save_reference(model, tok, max_length, path, toxic):
    model.eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.double()
    soft = torch.softmax(logits, dim=-1)[:, toxic]
    sig = torch.sigmoid(logits)[:, toxic]
    items = []
    for i, t in enumerate(TEXTS):
        ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
        items.append(
            {
                "text": t,
                "ids": ids,
                "logits": logits[i].tolist(),
                "softmax": float(soft[i]),
                "sigmoid": float(sig[i]),
            }
        )
    (path / "reference.json").write_text(
        json.dumps(
            {
                "script": "tests/reference/tiny_classifiers.py",
                "max_length": max_length,
                "toxic_label": model.config.id2label[toxic],
                "items": items,
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )


def tiny_roberta():
    path = OUT / "tiny-roberta"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bpe.save(str(path / "bpe.json"))
    vocab = bpe.get_vocab()
    (path / "vocab.json").write_text(json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False))
    model_json = json.loads(bpe.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model_json["merges"]]
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (path / "bpe.json").unlink()
    # The slow-to-fast conversion transformers does for RoBERTa: the tokenizer.json the
    # hub would have, from vocab.json + merges.txt.
    tok = RobertaTokenizerFast(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"))
    tok.save_pretrained(path)
    assert tok.pad_token_id == 1
    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=34,  # 32 usable positions after the padding offset
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=0.3,  # large, so the random head gives probabilities far from 0.5
        id2label={0: "neutral", 1: "toxic"},
        label2id={"neutral": 0, "toxic": 1},
    )
    model = RobertaForSequenceClassification(cfg)
    model.save_pretrained(path, safe_serialization=True)
    save_reference(model, tok, 32, path, 1)


def tiny_bert():
    path = OUT / "tiny-bert"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    )
    wp.post_processor = processors.BertProcessing(("[SEP]", wp.token_to_id("[SEP]")), ("[CLS]", wp.token_to_id("[CLS]")))
    tok = BertTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tok.save_pretrained(path)
    for extra in ["vocab.txt"]:
        (path / extra).unlink(missing_ok=True)
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=wp.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        pad_token_id=0,
        initializer_range=0.3,
        id2label={0: "non-toxic", 1: "toxic"},
        label2id={"non-toxic": 0, "toxic": 1},
    )
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(path, safe_serialization=True)
    save_reference(model, tok, 24, path, 1)


if __name__ == "__main__":
    tiny_roberta()
    tiny_bert()
    for d in ["tiny-roberta", "tiny-bert"]:
        for f in sorted((OUT / d).iterdir()):
            print(f.relative_to(ROOT), f.stat().st_size)
