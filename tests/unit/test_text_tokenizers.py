"""Text tokenizers: HF tokenizer.json (a trained BPE and a Chameleon-like 65,536-id file),
sentencepiece (trained here), the vocabulary's foreign-id map, transient ids and spec strings."""

import itertools

import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from lumos_megatron.tokenizers.text import (
    HFTextTokenizer,
    SentencePieceTextTokenizer,
    TextTokenizer,
    load_text_tokenizer,
    train_sentencepiece,
    transient_ids,
)
from lumos_megatron.tokenizers.text.toy import (
    write_chameleon_like_tokenizer,
    write_toy_bpe_tokenizer,
)
from lumos_megatron.vocab import LumosVocab
from lumos_megatron.vocab.text_ids import (
    CHAMELEON_DIGIT_BASE,
    chameleon_number_ids,
    reserved_text_ids,
)

VOCAB = LumosVocab()
SUBJECTS = ["a cat", "two dogs", "an old man", "a red car", "the ocean waves"]
ACTIONS = [
    "runs across",
    "sleeps on",
    "drives along",
    "rolls over",
    "glows above",
    "waits near",
    "jumps over",
    "moves toward",
    "looks at",
    "spins around",
]
PLACES = ["the green grass", "a quiet street", "the sandy beach"]
# 50 deterministic captions (5 subjects x 10 actions, place cycling).
CAPTIONS = [
    f"{s} {a} {PLACES[i % len(PLACES)]}"
    for i, (s, a) in enumerate(itertools.product(SUBJECTS, ACTIONS))
]
TRANSIENT_STRINGS = [s for s, _ in transient_ids(VOCAB).items()]
RESERVED = set(reserved_text_ids(VOCAB))


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("texttok")


@pytest.fixture(scope="module")
def chameleon(tok_dir):
    path = write_chameleon_like_tokenizer(CAPTIONS, tok_dir / "chameleon" / "tokenizer.json")
    return load_text_tokenizer(f"hf:{path}", VOCAB)


@pytest.fixture(scope="module")
def bpe(tok_dir):
    return load_text_tokenizer(write_toy_bpe_tokenizer(CAPTIONS, tok_dir / "bpe.json"), VOCAB)


@pytest.fixture(scope="module")
def sp_path(tok_dir):
    return train_sentencepiece(CAPTIONS, tok_dir / "sp" / "captions", vocab_size=120)


def _assert_plain_text_ids(ids):
    """Every id is a Lumos text id that the vocabulary does not reserve."""
    assert ids, "expected a non-empty encoding"
    for t in ids:
        assert 0 <= t < VOCAB.text_vocab_size and t not in RESERVED, t


# ---------------------------------------------------------------------------- vocabulary side
def test_vocab_transient_placeholder_fields():
    assert transient_ids(VOCAB) == {
        "<|image|>": 65536,
        "<|video|>": 65537,
        "<video_resolution_placeholder>": 65538,
        "<video_frames_placeholder>": 65539,
        "<video_fps_placeholder>": 65540,
    }
    # They collide with visual codes 3 and 4 on purpose (docs/method.md §1.1) and the vocab accepts that.
    assert (
        VOCAB.code_of(VOCAB.frames_placeholder) == 3 and VOCAB.code_of(VOCAB.fps_placeholder) == 4
    )
    with pytest.raises(ValueError, match="placeholder id frames_placeholder=100"):
        LumosVocab(frames_placeholder=100)
    with pytest.raises(ValueError, match="placeholder ids collide"):
        LumosVocab(fps_placeholder=65539)


def test_reserved_text_ids():
    size_tokens = set(range(8804, 9003))
    assert RESERVED == {0, 8196, 8197, 8710, 8803, 9003, 9004, 9005} | size_tokens
    # Chameleon's IMGIMG range is never produced by Lumos-1, so it is free for foreign text.
    assert 4 not in RESERVED and 8195 not in RESERVED


def test_text_id_map_is_a_bijection_that_avoids_reserved_ids():
    capacity = VOCAB.text_vocab_size - len(RESERVED)
    id_map = VOCAB.text_id_map(capacity)
    lumos = id_map.to_lumos(range(capacity))
    assert len(set(lumos)) == capacity
    assert not set(lumos) & RESERVED
    assert all(0 <= t < VOCAB.text_vocab_size for t in lumos)
    assert all(a < b for a, b in itertools.pairwise(lumos))  # order preserving
    assert id_map.to_foreign(lumos) == list(range(capacity))
    assert VOCAB.text_id_map(capacity) is id_map  # built once per size
    with pytest.raises(ValueError, match=f"at most {capacity} ids"):
        VOCAB.text_id_map(capacity + 1)
    with pytest.raises(ValueError, match="not the image"):
        id_map.to_foreign([VOCAB.separator])
    with pytest.raises(ValueError, match="outside the tokenizer"):
        VOCAB.text_id_map(10).to_lumos([10])
    with pytest.raises(ValueError, match="positive int"):
        VOCAB.text_id_map(0)


def test_chameleon_digit_rule():
    assert chameleon_number_ids(24) == [16401, 16403]
    assert chameleon_number_ids(12) == [16400, 16401]
    assert chameleon_number_ids(105) == [
        CHAMELEON_DIGIT_BASE + 1,
        CHAMELEON_DIGIT_BASE,
        CHAMELEON_DIGIT_BASE + 5,
    ]
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="non-negative int"):
            chameleon_number_ids(bad)


# ---------------------------------------------------------------------------- Chameleon branch
def test_chameleon_file_is_detected_and_ids_are_used_as_is(chameleon):
    assert isinstance(chameleon, HFTextTokenizer) and isinstance(chameleon, TextTokenizer)
    assert (
        chameleon.is_chameleon and chameleon.name == "chameleon" and chameleon.vocab_size == 65536
    )
    file_ids = tokenizers.Tokenizer.from_file(str(chameleon.path)).get_vocab()
    assert chameleon.encode("a cat") == [file_ids["a"], file_ids["cat"]]
    assert chameleon.encode("<reserved08706>") == [VOCAB.separator]
    assert chameleon.encode("<reserved09000>") == [VOCAB.video_start]
    # HF added tokens, added in the official order after the 65,536 ids.
    assert chameleon.encode("".join(TRANSIENT_STRINGS)) == [65536, 65537, 65538, 65539, 65540]
    assert chameleon.encode("of <video_frames_placeholder> frames") == [
        file_ids["of"],
        65539,
        file_ids["frames"],
    ]


def test_chameleon_numbers_are_written_digit_by_digit(chameleon):
    assert chameleon.encode_number(24) == [16401, 16403]
    assert chameleon.encode_number(12) == [16400, 16401]
    # In the file the digits are tokens 16399..16408, so the rule agrees with encoding the string.
    assert chameleon.encode("24") == chameleon.encode_number(24)
    with pytest.raises(ValueError, match="non-negative int"):
        chameleon.encode_number(-3)


def test_chameleon_decode_skips_structure_and_keeps_placeholders(chameleon):
    ids = [VOCAB.bos] + chameleon.encode("a cat <video_fps_placeholder>") + [VOCAB.separator]
    assert chameleon.decode(ids) == "a cat <video_fps_placeholder>"


def test_chameleon_file_saved_with_official_added_tokens(tok_dir):
    """A file saved after the official add_tokens(["<|image|>", "<|video|>"]) is still Chameleon."""
    path = write_chameleon_like_tokenizer(CAPTIONS, tok_dir / "cham_added" / "tokenizer.json")
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.add_tokens(["<|image|>", "<|video|>"])
    tok.save(str(path))
    loaded = load_text_tokenizer(path, VOCAB)
    assert loaded.is_chameleon and loaded.vocab_size == 65536
    assert loaded.encode("".join(TRANSIENT_STRINGS)) == [65536, 65537, 65538, 65539, 65540]


def test_chameleon_needs_the_official_vocabulary(chameleon):
    with pytest.raises(ValueError, match="official ids"):
        HFTextTokenizer(chameleon.path, LumosVocab(separator=8711))


# ---------------------------------------------------------------------------- foreign HF tokenizer
def test_foreign_bpe_maps_into_free_text_ids_and_round_trips(bpe):
    assert not bpe.is_chameleon and bpe.name == "hf:bpe.json"
    for caption in CAPTIONS:
        ids = bpe.encode(caption)
        _assert_plain_text_ids(ids)
        assert bpe.decode(ids) == caption
        assert bpe.decode([VOCAB.bos] + ids + [VOCAB.separator]) == caption
    ids = bpe.encode("of <video_frames_placeholder> frames at <video_fps_placeholder>")
    assert ids.count(65539) == 1 and ids.count(65540) == 1
    _assert_plain_text_ids([t for t in ids if t < 65536])
    assert bpe.encode_number(24) == bpe.encode("24")
    with pytest.raises(ValueError, match="not the image"):
        bpe.decode([VOCAB.visual_id(100)])


def test_foreign_tokenizer_too_large_for_the_text_range(tok_dir):
    small = LumosVocab(text_vocab_size=9100)  # 9100 - 207 reserved = 8893 free text ids
    tok = tokenizers.Tokenizer(models.WordLevel({f"w{i}": i for i in range(9000)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tok_dir / "big.json"
    tok.save(str(path))
    with pytest.raises(ValueError, match="at most 8893 ids"):
        load_text_tokenizer(f"hf:{path}", small)


# ---------------------------------------------------------------------------- sentencepiece
def test_sentencepiece_training_is_deterministic(tok_dir, sp_path):
    again = train_sentencepiece(CAPTIONS, tok_dir / "sp2" / "captions", vocab_size=120)
    assert again.read_bytes() == sp_path.read_bytes()
    with pytest.raises(ValueError, match="non-empty caption"):
        train_sentencepiece(["", "  "], tok_dir / "none", vocab_size=50)
    with pytest.raises(ValueError, match="vocab_size"):
        train_sentencepiece(CAPTIONS, tok_dir / "zero", vocab_size=0)


def test_sentencepiece_tokenizer(sp_path):
    sp = load_text_tokenizer(f"sp:{sp_path}", VOCAB)
    assert isinstance(sp, SentencePieceTextTokenizer) and not sp.is_chameleon
    assert sp.name == "sp:captions.model" and 0 < sp.vocab_size <= 120
    for caption in CAPTIONS:
        ids = sp.encode(caption)
        _assert_plain_text_ids(ids)
        assert sp.decode(ids) == caption
    ids = sp.encode(
        "consisting of <video_frames_placeholder> frames at <video_fps_placeholder> fps"
    )
    assert ids.count(65539) == 1 and ids.count(65540) == 1
    assert (
        sp.decode(ids)
        == "consisting of <video_frames_placeholder> frames at <video_fps_placeholder> fps"
    )
    _assert_plain_text_ids(sp.encode_number(24))
    assert sp.encode_number(24) == sp.encode("24")


# ---------------------------------------------------------------------------- spec strings
def test_load_text_tokenizer_spec_strings(tok_dir, chameleon, bpe, sp_path):
    assert load_text_tokenizer(chameleon, VOCAB) is chameleon
    assert load_text_tokenizer(str(chameleon.path.parent), VOCAB).is_chameleon  # directory
    assert isinstance(load_text_tokenizer(str(sp_path), VOCAB), SentencePieceTextTokenizer)
    assert isinstance(load_text_tokenizer(f"hf:{bpe.path}", VOCAB), HFTextTokenizer)
    sp_dir = tok_dir / "sp_dir"
    sp_dir.mkdir()
    (sp_dir / "tokenizer.model").write_bytes(sp_path.read_bytes())
    assert isinstance(load_text_tokenizer(sp_dir, VOCAB), SentencePieceTextTokenizer)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_tokenizer(tok_dir / "missing.json", VOCAB)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_tokenizer(f"sp:{tok_dir / 'missing.model'}", VOCAB)
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor tokenizer.model"):
        load_text_tokenizer(tok_dir / "sp", VOCAB)  # holds captions.model only
    odd = tok_dir / "tokenizer.txt"
    odd.write_text("x")
    with pytest.raises(ValueError, match="prefix it with 'hf:'"):
        load_text_tokenizer(odd, VOCAB)
    with pytest.raises(ValueError, match="cannot load HF tokenizer"):
        load_text_tokenizer(f"hf:{odd}", VOCAB)
    with pytest.raises(ValueError, match="cannot load sentencepiece model"):
        load_text_tokenizer(f"sp:{odd}", VOCAB)
    with pytest.raises(ValueError, match="empty"):
        load_text_tokenizer("  ", VOCAB)
    with pytest.raises(ValueError, match="no path"):
        load_text_tokenizer("hf:", VOCAB)
