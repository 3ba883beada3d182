"""Vision probe: is the lesion kind readable from the tiny Qwen2-VL's vision features at all?

Companion of bench/learning_check.py. When the trained tiny model answers verify no better than
chance, either the image never carries the answer into the model or the 2-layer language model
does not learn to use it. This probe separates the two: it runs the untrained vision tower on the
same generated lesion images and fits a logistic regression (bright "hemorrhage" vs dark "cyst")
on three readouts of the merged visual tokens the language model receives: their mean, their
element-wise max, and the one token that covers the lesion centre. A run with shuffled labels is
the control (it should stay near 0.5).

    python bench/vision_probe.py [--images 400 --test-share 0.25 --out bench/results]
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lesion_task import Lesion, lesions  # noqa: E402

MODEL_DIR = ROOT / "models/tiny-qwen2-vl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400, help="generated lesion images")
    p.add_argument("--test-share", type=float, default=0.25, help="held-out share of the images")
    p.add_argument("--seed", type=int, default=0, help="seed of the images and of the split")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results", help="where vision_probe.json goes")
    return p


@torch.inference_mode()
def visual_tokens(model: torch.nn.Module, processor, items: list[Lesion]) -> tuple[list[torch.Tensor], int, int]:
    """Merged visual tokens per image ([n_tokens, hidden]) and the merged grid's (height, width)."""
    images = [Image.open(io.BytesIO(item.jpeg)).convert("RGB") for item in items]
    batch = processor.image_processor(images=images, return_tensors="pt")
    feats = model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
    merge = model.model.visual.spatial_merge_size
    _, grid_h, grid_w = (int(v) for v in batch["image_grid_thw"][0])
    return list(feats), grid_h // merge, grid_w // merge


def centre_token(item: Lesion, grid_h: int, grid_w: int, size: tuple[int, int]) -> int:
    """Row-major index of the merged token whose patch holds the lesion box's centre."""
    x0, y0, x1, y1 = item.box
    col = min(int((x0 + x1) / 2 / size[0] * grid_w), grid_w - 1)
    row = min(int((y0 + y1) / 2 / size[1] * grid_h), grid_h - 1)
    return row * grid_w + col


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                   weight_decay: float = 1e-3, steps: int = 300) -> float:
    """Held-out accuracy of an L2-regularised logistic regression on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(x_train.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + b, y_train) \
            + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (((x_test @ w + b) > 0).float() == y_test).float().mean().item()


@torch.inference_mode()
def token_norms(model: torch.nn.Module, tokens: list[torch.Tensor]) -> dict:
    """L2 norms of what the language model receives: merged visual tokens against the embeddings of the
    text tokens (rows that are not all zero: the tiny tokenizer's real tokens). A mismatch of orders of
    magnitude would let one kind of token dominate the residual stream before the first norm."""
    embeddings = model.get_input_embeddings().weight
    text = embeddings[embeddings.abs().sum(-1) > 0].norm(dim=-1)
    visual = torch.cat(tokens).norm(dim=-1)
    return {"visual_mean": round(visual.mean().item(), 3), "visual_median": round(visual.median().item(), 3),
            "text_embedding_mean": round(text.mean().item(), 3),
            "text_embedding_median": round(text.median().item(), 3),
            "ratio_visual_to_text": round((visual.mean() / text.mean()).item(), 1)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model = Qwen2VLForConditionalGeneration.from_pretrained(MODEL_DIR, torch_dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(MODEL_DIR)
    items = list(lesions(args.images, args.seed))
    size = Image.open(io.BytesIO(items[0].jpeg)).size

    tokens: list[torch.Tensor] = []
    for start in range(0, len(items), 32):
        chunk, grid_h, grid_w = visual_tokens(model, processor, items[start:start + 32])
        tokens += chunk
    readouts = {
        "mean of all tokens": torch.stack([t.mean(0) for t in tokens]),
        "max over tokens": torch.stack([t.max(0).values for t in tokens]),
        "lesion-centre token": torch.stack([t[centre_token(i, grid_h, grid_w, size)] for t, i in zip(tokens, items)]),
    }
    labels = torch.tensor([float(i.bright) for i in items])
    order = list(range(len(items)))
    random.Random(args.seed).shuffle(order)
    n_test = max(1, int(len(items) * args.test_share))
    test, train = torch.tensor(order[:n_test]), torch.tensor(order[n_test:])
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.seed + 1))]

    results = {"norms": token_norms(model, tokens)}
    for name, x in readouts.items():
        results[name] = {
            "accuracy": round(probe_accuracy(x[train], labels[train], x[test], labels[test]), 3),
            "shuffled_labels_accuracy": round(probe_accuracy(x[train], shuffled[train], x[test], shuffled[test]), 3),
        }
    report = {
        "settings": {"images": len(items), "train": len(train), "test": n_test, "seed": args.seed,
                     "model": str(MODEL_DIR.relative_to(ROOT)), "image_size": list(size),
                     "merged_grid": [grid_h, grid_w], "feature_dim": int(tokens[0].shape[1]),
                     "bright_share_test": round(labels[test].mean().item(), 3)},
        "results": results,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vision_probe.json").write_text(json.dumps(report, indent=1))
    print(f"{'readout':22s} {'accuracy':>9s} {'shuffled':>9s}")
    for name, r in results.items():
        if name != "norms":
            print(f"{name:22s} {r['accuracy']:9.3f} {r['shuffled_labels_accuracy']:9.3f}")
    print("L2 norms (ladder rung c):", results["norms"])
    print(f"held-out share bright: {report['settings']['bright_share_test']}; wrote {args.out / 'vision_probe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
