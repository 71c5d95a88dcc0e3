"""The installed wheel end to end, from outside the source tree (CI's wheel job, .ci/wheel_check.sh).

Tokenizers made with the package's own API (an untrained FSQ video tokenizer, a sentencepiece
model trained on three captions), a tiny model trained for two iterations on mock data, exported
to the official layout, imported back, loaded (both checkpoints give the same logits) and used
to generate one T2I sample.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch

BIN = Path(sys.argv[1])
HERE = Path.cwd()
# Head dim hidden / heads = 32 (the official layout has no separate kv_channels; MM-RoPE needs 32k).
RECIPE = """model: {num_layers: 2, hidden_size: 128, ffn_hidden_size: 352, num_attention_heads: 4, num_query_groups: 2,
        vocab_size: 66536, max_position_embeddings: 1024}
train: {micro_batch_size: 2, global_batch_size: 4, train_iters: 2, lr: 3.0e-3, min_lr: 3.0e-3, seed: 0}
data: {seq_length: 96, mock: true, mock_frames: 2, mock_grid: [4, 4], mock_text_tokens: 16}
"""


def run(*argv):
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=HERE)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def main():
    from lumos_megatron.data.pretokenize import default_video_tokenizer
    from lumos_megatron.inference import load_model
    from lumos_megatron.tokenizers.text import train_sentencepiece

    captions = ["a red ball rolls on the grass", "a cat sleeps on a sofa", "waves crash on the beach"]
    text = f"sp:{train_sentencepiece(captions * 5, HERE / 'text', 300)}"
    video = default_video_tokenizer(str(HERE))
    (HERE / "tiny.yaml").write_text(RECIPE)
    run("lumos-train", "--config", "tiny.yaml", "--save", "ckpt")
    run("lumos-convert", "export-hf", "--load", "ckpt", "--out", "hf", "--no-progress")
    run("lumos-convert", "import-hf", "--hf-dir", "hf", "--out", "ckpt2", "--no-progress")
    summary = json.loads(run("lumos-inspect", "ckpt2", "--json").stdout)
    assert summary["iteration"] == 0 and summary["parameters"]["total"] > 0, summary
    tokens = torch.tensor([[0, 10001, 10002, 10003]])
    with load_model("ckpt") as model:
        trained = model.forward_logits(tokens)
    with load_model("ckpt2") as model:
        imported = model.forward_logits(tokens)
    assert torch.equal(trained, imported), (trained - imported).abs().max()
    run("lumos-generate", "--load", "ckpt2", "--video-tokenizer", video, "--text-tokenizer", text, "--task", "t2i",
        "--prompt", "a cat", "--resolution", "32x32", "--steps", "2", "--out", "samples", "--no-progress")
    info = json.loads((HERE / "samples" / "sample_00000.json").read_text())
    assert info["task"] == "t2i" and info["video_tokens"], info
    print("round trip: train -> export-hf -> import-hf -> load (same logits) -> generate: ok")


if __name__ == "__main__":
    main()
