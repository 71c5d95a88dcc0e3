"""The Lumos prompt (template, ids, caption validation) and training-time placeholder filling,
including docs/method.md §1.3 worked example: 65539 → "24" = [16401, 16403] and
65540 → "12" = [16400, 16401].
"""

import pytest
import torch

from lumos_megatron.tokenizers.text import (
    BAD_CAPTION,
    CaptionError,
    build_prompt_ids,
    fill_placeholders,
    load_text_tokenizer,
    prompt_text,
    train_sentencepiece,
    validate_caption,
)
from lumos_megatron.tokenizers.text.toy import write_chameleon_like_tokenizer
from lumos_megatron.vocab import (
    IGNORE_INDEX,
    LumosVocab,
    build_video_sample,
    parse_layout,
    unconditional,
)
from lumos_megatron.vocab.text_ids import reserved_text_ids

VOCAB = LumosVocab()
CAPTIONS = [
    f"a {c} {v} near the {p}"
    for c in ("cat", "dog", "bird", "horse", "fox")
    for v in ("runs", "sleeps")
    for p in ("river", "house", "tree", "road", "hill")
]
CAPTION = "a cat runs near the river"
# Two latent frames of 4x4 codes 0..31: the video holds visual ids 65539/65540 (codes 3 and 4),
# which must never be taken for placeholders.
CODES = torch.arange(32).view(2, 4, 4)


@pytest.fixture(scope="module")
def chameleon(tmp_path_factory):
    path = write_chameleon_like_tokenizer(
        CAPTIONS, tmp_path_factory.mktemp("cham") / "tokenizer.json"
    )
    return load_text_tokenizer(path, VOCAB)


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    model = train_sentencepiece(
        CAPTIONS, tmp_path_factory.mktemp("sp") / "captions", vocab_size=100
    )
    return load_text_tokenizer(model, VOCAB)


def video_part(duration=2, fps=12):
    """Tokens/labels of the assistant turn (9004 … 9005, 8710) for CODES."""
    tokens, labels = build_video_sample(
        torch.empty(0, dtype=torch.long), CODES, duration, fps, VOCAB
    )
    start = int((tokens == VOCAB.video_start).nonzero()[0])
    return tokens[start:], labels[start:]


def stored_sample(prompt_ids):
    """A pre-tokenized sample as stored: prompt with placeholders (labels -100) + the video."""
    vid_tok, vid_lab = video_part()
    tokens = torch.cat([torch.tensor(prompt_ids), vid_tok])
    labels = torch.cat([torch.full((len(prompt_ids),), IGNORE_INDEX), vid_lab])
    return tokens, labels


# ---------------------------------------------------------------------------- template
def test_prompt_template_string():
    assert prompt_text("a cat", 448, 256) == (
        "Generate a video with a resolution of 448x256, consisting of <video_frames_placeholder> "
        "frames at <video_fps_placeholder> frames per second, according to the following prompt:"
        "\n a cat"
    )
    assert prompt_text("a cat", 672, 384, frames=24, fps=12) == (
        "Generate a video with a resolution of 672x384, consisting of 24 frames at 12 frames per "
        "second, according to the following prompt:\n a cat"
    )
    # Images are 1-frame videos: "1 frames at 1 frames per second" (docs/method.md §1.2).
    assert "consisting of 1 frames at 1 frames per second" in prompt_text(
        "x", 448, 256, frames=1, fps=1
    )
    with pytest.raises(ValueError, match="both frames and fps"):
        prompt_text("a cat", 448, 256, frames=24)
    with pytest.raises(ValueError, match="width"):
        prompt_text("a cat", 0, 256)
    with pytest.raises(ValueError, match="fps"):
        prompt_text("a cat", 448, 256, frames=24, fps=0)


def test_prompt_ids_chameleon(chameleon):
    ids = build_prompt_ids(CAPTION, 448, 256, chameleon, VOCAB)
    assert ids[0] == VOCAB.bos and ids[-1] == VOCAB.separator
    assert ids[1:-1] == chameleon.encode(prompt_text(CAPTION, 448, 256))
    assert ids.count(VOCAB.frames_placeholder) == 1 and ids.count(VOCAB.fps_placeholder) == 1
    assert ids.index(VOCAB.frames_placeholder) < ids.index(VOCAB.fps_placeholder)
    others = [t for t in ids if t not in (VOCAB.frames_placeholder, VOCAB.fps_placeholder)]
    assert all(0 <= t < VOCAB.text_vocab_size for t in others)
    assert chameleon.decode(ids) == chameleon.decode(
        chameleon.encode(prompt_text(CAPTION, 448, 256))
    )


def test_prompt_ids_foreign_tokenizer(sp):
    ids = build_prompt_ids(CAPTION, 448, 256, sp, VOCAB)
    assert ids[0] == VOCAB.bos and ids[-1] == VOCAB.separator
    assert ids.count(VOCAB.frames_placeholder) == 1 and ids.count(VOCAB.fps_placeholder) == 1
    reserved = set(reserved_text_ids(VOCAB))
    text = [t for t in ids[1:-1] if t not in (VOCAB.frames_placeholder, VOCAB.fps_placeholder)]
    assert text and all(0 <= t < VOCAB.text_vocab_size and t not in reserved for t in text)


# ---------------------------------------------------------------------------- captions
@pytest.mark.parametrize(
    "bad", ["", "   \n\t", None, 5, "a cat <video_fps_placeholder> runs", "<|video|>"]
)
def test_bad_captions_are_reported_as_bad_caption(bad, chameleon):
    for call in (
        lambda: validate_caption(bad),
        lambda: build_prompt_ids(bad, 448, 256, chameleon, VOCAB),
    ):
        with pytest.raises(CaptionError) as err:
            call()
        assert isinstance(err.value, ValueError)
        assert err.value.reason == BAD_CAPTION == "bad_caption"
        assert str(err.value).startswith("bad_caption:")


def test_caption_encoding_to_a_structural_token_is_rejected(chameleon):
    # With Chameleon's file "<reserved09000>" is the video start token and would open a fake video.
    with pytest.raises(CaptionError, match="reserved token id 9004"):
        build_prompt_ids("a cat <reserved09000>", 448, 256, chameleon, VOCAB)
    assert validate_caption("  a cat  ") == "  a cat  "  # valid captions are not altered


# ---------------------------------------------------------------------------- placeholder filling
def test_spec_worked_example_placeholders(chameleon):
    """§1.3: 12 fps x 2 s → "24 frames at 12 frames per second" with the Chameleon digit ids."""
    prompt = build_prompt_ids(CAPTION, 672, 384, chameleon, VOCAB)
    tokens, labels = stored_sample(prompt)
    i_frames, i_fps = prompt.index(65539), prompt.index(65540)

    new_tok, new_lab = fill_placeholders(tokens, labels, frames=24, fps=12)

    assert new_tok.dtype == torch.long and new_lab.dtype == torch.long
    assert new_tok.numel() == new_lab.numel() == tokens.numel() + 2
    assert new_tok[i_frames : i_frames + 2].tolist() == [16401, 16403]
    # The fps placeholder moved one position to the right ("24" is two tokens for one).
    assert new_tok[i_fps + 1 : i_fps + 3].tolist() == [16400, 16401]
    start = int((new_tok == VOCAB.video_start).nonzero()[0])
    assert start == len(prompt) + 2
    assert (new_lab[:start] == IGNORE_INDEX).all()
    # The video, which contains the visual ids 65539/65540, is untouched.
    assert torch.equal(new_tok[start:], tokens[len(prompt) :])
    assert torch.equal(new_lab[start:], labels[len(prompt) :])
    assert 65539 in new_tok[start:].tolist() and 65540 in new_tok[start:].tolist()
    assert 65539 not in new_tok[:start].tolist() and 65540 not in new_tok[:start].tolist()
    # Same ids as the inference prompt, which writes the numbers in the text.
    assert new_tok[:start].tolist() == build_prompt_ids(
        CAPTION, 672, 384, chameleon, VOCAB, frames=24, fps=12
    )
    # The tokenizer's encode_number is the same rule, and the filled sample parses.
    again, _ = fill_placeholders(
        tokens, labels, 24, 12, number_ids=chameleon.encode_number, vocab=VOCAB
    )
    assert torch.equal(again, new_tok)
    layout = parse_layout(new_tok, VOCAB)
    assert layout.video_start == start and layout.num_frames == 2


def test_fill_with_a_foreign_tokenizer(sp):
    prompt = build_prompt_ids(CAPTION, 448, 256, sp, VOCAB)
    tokens, labels = stored_sample(prompt)
    new_tok, new_lab = fill_placeholders(
        tokens, labels, 24, 12, number_ids=sp.encode_number, vocab=VOCAB
    )
    n24, n12 = sp.encode_number(24), sp.encode_number(12)
    i_frames = prompt.index(VOCAB.frames_placeholder)
    assert new_tok[i_frames : i_frames + len(n24)].tolist() == n24
    i_fps = prompt.index(VOCAB.fps_placeholder) + len(n24) - 1
    assert new_tok[i_fps : i_fps + len(n12)].tolist() == n12
    assert new_tok.numel() == tokens.numel() + len(n24) + len(n12) - 2
    assert parse_layout(new_tok, VOCAB).num_frames == 2


def test_samples_without_placeholders_pass_through():
    # Mock-style sample: plain text ids, video with visual ids 65539/65540.
    tokens, labels = build_video_sample([101, 102, 103], CODES, 2, 12, VOCAB)
    new_tok, new_lab = fill_placeholders(tokens, labels, 24, 12)
    assert torch.equal(new_tok, tokens) and torch.equal(new_lab, labels)
    # A CFG-dropped sample starts with 9004: nothing before it to fill.
    u_tok, u_lab = unconditional(tokens, labels, VOCAB)
    new_tok, new_lab = fill_placeholders(u_tok, u_lab, 24, 12)
    assert torch.equal(new_tok, u_tok) and torch.equal(new_lab, u_lab)


def test_prompt_without_video_is_filled_entirely(chameleon):
    prompt = build_prompt_ids(CAPTION, 448, 256, chameleon, VOCAB)
    new_tok, new_lab = fill_placeholders(prompt, None, 24, 12)
    assert new_lab is None
    assert new_tok.tolist() == build_prompt_ids(
        CAPTION, 448, 256, chameleon, VOCAB, frames=24, fps=12
    )


def test_fill_placeholders_rejects_bad_input(chameleon):
    tokens, labels = stored_sample(build_prompt_ids(CAPTION, 448, 256, chameleon, VOCAB))
    with pytest.raises(ValueError, match="labels length"):
        fill_placeholders(tokens, labels[:-1], 24, 12)
    with pytest.raises(ValueError, match="frames must be a non-negative int"):
        fill_placeholders(tokens, labels, -1, 12)
    with pytest.raises(ValueError, match="number_ids"):
        fill_placeholders(tokens, labels, 24, 12, number_ids=lambda n: [VOCAB.video_start])
    with pytest.raises(ValueError, match="number_ids"):
        fill_placeholders(tokens, labels, 24, 12, number_ids=lambda n: [])
    with pytest.raises(ValueError, match="1-D"):
        fill_placeholders(tokens.unsqueeze(0), None, 24, 12)
    with pytest.raises(ValueError, match="integer ids"):
        fill_placeholders(tokens.float(), None, 24, 12)
