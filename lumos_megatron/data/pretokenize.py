"""Offline pre-tokenization: manifest → decoded, cropped frames → video codes + prompt ids → Lumos
sequences in indexed-dataset shards (``data.indexed``), resumable and parallel.

Work is cut into shards of ``shard_size`` consecutive manifest rows. A shard is committed
atomically (its ``.idx`` last), together with ``shard-XXXXX.skipped.jsonl``, the inputs it
skipped and why. A re-run skips committed shards and redoes the others, and every shard's
content is a pure function of its rows and the settings, so an interrupted run finished later
gives the same dataset as an uninterrupted one. ``DIR/skipped.jsonl`` (all shards' skips, in
manifest order) is written when every shard is done.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from lumos_megatron.data.indexed import DATASET_INFO, ShardWriter, complete_shards, remove_partial_shard, shard_prefix
from lumos_megatron.data.manifest import ManifestEntry, read_manifest
from lumos_megatron.vocab import LumosVocab, build_video_sample

SKIPPED = "skipped.jsonl"
TEXT_TOKENIZER_FILE = "text_tokenizer"
NUMBER_TABLE_SIZE = 1000
"""Numbers 0..999 written with the text tokenizer are stored (as the official num2tokens.json),
so training fills frames/fps placeholders without loading the tokenizer."""


@dataclass(frozen=True)
class PretokenizeSettings:
    """Everything that determines the output (stored in dataset.json; a resume must match)."""

    manifest: str
    output: str
    video_tokenizer: str
    text_tokenizer: str
    fps: float = 12.0
    duration: float = 2.0
    resolution: int = 256
    sampling: str = "exact"
    backend: str = "auto"
    shard_size: int = 256
    vocab_size: int = 129536

    def fingerprint(self) -> Dict[str, object]:
        """The fields a resumed run must share with the run that started the directory."""
        d = asdict(self)
        for key in ("output", "backend"):  # backends decode the same frames within codec tolerance
            d.pop(key)
        return d


# ------------------------------------------------------------------ per-process worker state
_WORKER: Dict[str, object] = {}


def _init_worker(settings: PretokenizeSettings, worker_id: Optional[int] = None) -> None:
    """Load the tokenizers once per process (each worker on its own GPU when there are several)."""
    if worker_id is None:
        identity = mp.current_process()._identity
        worker_id = identity[0] - 1 if identity else 0
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", worker_id % torch.cuda.device_count())
    _WORKER.update(encoding_context(settings, device))


def encoding_context(settings: PretokenizeSettings, device=None) -> Dict[str, object]:
    """Settings, vocabulary and loaded tokenizers that ``encode_entry`` works with."""
    from lumos_megatron.tokenizers.text import load_text_tokenizer
    from lumos_megatron.tokenizers.video.spec import load_video_tokenizer

    vocab = LumosVocab(vocab_size=settings.vocab_size)
    return {"settings": settings, "vocab": vocab,
            "text": load_text_tokenizer(settings.text_tokenizer, vocab),
            "video": load_video_tokenizer(settings.video_tokenizer, device=device)}


def encode_entry(entry: ManifestEntry, context: Optional[Dict[str, object]] = None
                 ) -> Tuple[torch.Tensor, Dict[str, object]]:
    """One manifest row → (Lumos token ids, sidecar metadata), with the tokenizers and settings
    of ``context`` (default: this worker's). Raises ``MediaError`` / ``CaptionError`` /
    ``ValueError`` for an input to skip. Also the per-sample path of streaming training."""
    from lumos_megatron.data.video import load_media
    from lumos_megatron.tokenizers.text import build_prompt_ids, validate_caption

    ctx = context if context is not None else _WORKER
    s: PretokenizeSettings = ctx["settings"]  # type: ignore[assignment]
    vocab: LumosVocab = ctx["vocab"]  # type: ignore[assignment]
    video = ctx["video"]
    caption = validate_caption(entry.caption)
    media = load_media(entry.path, fps=s.fps, duration=s.duration, resolution=s.resolution,
                       sampling=s.sampling, backend=s.backend)
    codes = video.encode(media.frames)  # type: ignore[attr-defined]
    if int(codes.max()) >= vocab.num_visual_codes:
        raise ValueError(f"the video tokenizer's codebook ({video.codebook_size}) does not fit "  # type: ignore[attr-defined]
                         f"the vocabulary's {vocab.num_visual_codes} visual codes")
    prompt = build_prompt_ids(caption, media.width, media.height, ctx["text"], vocab)
    # build_video_sample adds BOS and the separator itself.
    tokens, _ = build_video_sample(torch.tensor(prompt[1:-1], dtype=torch.long), codes,
                                   int(round(media.duration)), int(round(media.fps)), vocab)
    meta = {"latent_frames": int(codes.shape[0]), "latent_grid": [int(codes.shape[1]), int(codes.shape[2])],
            "duration": media.duration, "fps": media.fps, "width": media.width, "height": media.height,
            "rgb_frames": int(media.frames.shape[0]), "source": entry.path, "caption": caption,
            "is_image": bool(media.is_image), "row": entry.index, **entry.extra}
    return tokens, meta


def skip_record(entry: ManifestEntry, error: Exception) -> Dict[str, object]:
    """The ``skipped.jsonl`` line of an input that failed with ``error`` (its ``reason`` when it
    has one, else ``corrupt``)."""
    reason = getattr(error, "reason", None) or "corrupt"
    detail = getattr(error, "detail", None) or str(error)
    return {"path": entry.path, "reason": reason, "detail": detail, "row": entry.index}


def process_shard(job: Tuple[int, Sequence[ManifestEntry]]) -> Tuple[int, int, int]:
    """Encode one shard's rows and commit it; returns (shard, written, skipped)."""
    from lumos_megatron.data.video import MediaError
    from lumos_megatron.tokenizers.text import CaptionError

    shard, entries = job
    s: PretokenizeSettings = _WORKER["settings"]  # type: ignore[assignment]
    prefix = shard_prefix(s.output, shard)
    remove_partial_shard(prefix)
    writer = ShardWriter(s.output, shard)
    skipped: List[Dict[str, object]] = []
    try:
        for entry in entries:
            try:
                tokens, meta = encode_entry(entry)
            # ValueError/RuntimeError: e.g. a frame size the tokenizer rejects ("corrupt").
            except (MediaError, CaptionError, ValueError, RuntimeError) as e:
                skipped.append(skip_record(entry, e))
                continue
            writer.add(tokens, meta)
        tmp = prefix + ".tmp.skipped.jsonl"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in skipped)
        os.replace(tmp, prefix + ".skipped.jsonl")
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    return shard, writer.count, len(skipped)


# ------------------------------------------------------------------ orchestration
def _check_or_write_info(settings: PretokenizeSettings, number_tokens: List[List[int]]) -> None:
    path = os.path.join(settings.output, DATASET_INFO)
    info = {"settings": settings.fingerprint(), "number_tokens": number_tokens, "version": 1}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("settings") != info["settings"]:
            changed = sorted(k for k in info["settings"] if old.get("settings", {}).get(k) != info["settings"][k])
            raise ValueError(f"{settings.output} was started with other settings ({', '.join(changed)} differ); "
                             "use a new --output or the original settings to resume")
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, path)


def default_text_tokenizer(entries: Sequence[ManifestEntry], output: str, vocab_size: int = 1000) -> str:
    """Spec of a sentencepiece model trained on the manifest's captions (``DIR/text_tokenizer.model``;
    reused when present), for runs without Chameleon's tokenizer.json."""
    from lumos_megatron.tokenizers.text import train_sentencepiece

    path = os.path.join(output, TEXT_TOKENIZER_FILE + ".model")
    if not os.path.exists(path):
        captions = [e.caption for e in entries if isinstance(e.caption, str) and e.caption.strip()]
        train_sentencepiece(captions, os.path.join(output, TEXT_TOKENIZER_FILE), vocab_size)
    return "sp:" + path


def default_video_tokenizer(output: str) -> str:
    """Spec of an untrained FSQ video tokenizer (seed 0, ``DIR/video_tokenizer_untrained.pt``;
    reused when present): lets the pipeline run end to end without weights. Its codes are not
    meaningful; real runs pass Cosmos or a trained FSQ checkpoint."""
    from lumos_megatron.tokenizers.video.fsq_model import FSQVideoAutoencoder
    from lumos_megatron.tokenizers.video.fsq_tokenizer import save_fsq_checkpoint

    path = os.path.join(output, "video_tokenizer_untrained.pt")
    if not os.path.exists(path):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = FSQVideoAutoencoder()
        save_fsq_checkpoint(path, model)
    return "fsq:" + path


def _merge_skipped(output: str, shards: int) -> int:
    records = []
    for shard in range(shards):
        with open(shard_prefix(output, shard) + ".skipped.jsonl", encoding="utf-8") as f:
            records += f.readlines()
    tmp = os.path.join(output, SKIPPED + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(records)
    os.replace(tmp, os.path.join(output, SKIPPED))
    return len(records)


def pretokenize(settings: PretokenizeSettings, workers: int = 1, progress: bool = True) -> Dict[str, int]:
    """Run (or resume) pre-tokenization; returns counts ``{samples, skipped, shards}``."""
    from tqdm import tqdm

    from lumos_megatron.tokenizers.text import load_text_tokenizer

    entries = read_manifest(settings.manifest)
    os.makedirs(settings.output, exist_ok=True)
    # The main process needs only the text tokenizer (for the number table); the video tokenizer
    # is loaded where samples are encoded.
    text = load_text_tokenizer(settings.text_tokenizer, LumosVocab(vocab_size=settings.vocab_size))
    _check_or_write_info(settings, [list(text.encode_number(n)) for n in range(NUMBER_TABLE_SIZE)])

    size = settings.shard_size
    jobs = [(k, entries[k * size:(k + 1) * size]) for k in range(-(-len(entries) // size))]
    done = {os.path.basename(p) for p in complete_shards(settings.output)}
    pending = [job for job in jobs if os.path.basename(shard_prefix(settings.output, job[0])) not in done]
    bar = tqdm(total=len(entries), initial=len(entries) - sum(len(j[1]) for j in pending),
               unit="sample", desc="pre-tokenizing", disable=not progress)
    if workers <= 1 or len(pending) <= 1:
        if pending:
            _init_worker(settings, worker_id=0)
        for job in pending:
            process_shard(job)
            bar.update(len(job[1]))
    else:
        # spawn: DALI and CUDA do not survive fork; each worker loads its own tokenizers.
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(pending)), initializer=_init_worker, initargs=(settings,)) as pool:
            for shard, written, skipped in pool.imap_unordered(process_shard, pending):
                bar.update(written + skipped)
    bar.close()
    skipped = _merge_skipped(settings.output, len(jobs))
    return {"samples": len(entries) - skipped, "skipped": skipped, "shards": len(jobs)}
