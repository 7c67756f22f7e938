"""The usual way to serve ResNet-18: Flask + PyTorch/torchvision, run by gunicorn.

This is the baseline `measure.py` compares resnet18-fc with. It is written the way such services
are typically deployed (one model per worker process, torchvision's transforms, PIL decoding,
`torch.no_grad()`), serving the same weights file as resnet18-fc: `RESNET18_WEIGHTS` names a
safetensors file with TorchVision's tensor names (the synthetic weights written by
`cargo run --release --example synthetic_weights -- FILE`, or a converted checkpoint).

    RESNET18_WEIGHTS=model/resnet18.safetensors gunicorn -w 1 -b 127.0.0.1:9100 app:app

Routes: `POST /classify` (raw image body, `?top_k=N`, default 3) and `GET /healthz`; the JSON
answer has the same shape as resnet18-fc's (`predictions: [{rank, index, score}]`).
"""

import io
import os

import torch
from flask import Flask, jsonify, request
from PIL import Image
from safetensors.torch import load_file
from torchvision import models
from torchvision import transforms as T

# TorchVision's ImageNet preprocessing for ResNet-18 (IMAGENET1K_V1 transforms).
PREPROCESS = T.Compose(
    [
        T.Resize(256),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


def load_model(path: str) -> torch.nn.Module:
    model = models.resnet18()
    state = load_file(path)
    result = model.load_state_dict(state, strict=False)
    # Weight files without BatchNorm's `num_batches_tracked` counters are fine (unused in eval).
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise SystemExit(f"{path}: missing {missing}, unexpected {result.unexpected_keys}")
    return model.eval()


app = Flask(__name__)
MODEL = load_model(os.environ.get("RESNET18_WEIGHTS", "model/resnet18.safetensors"))


@app.get("/healthz")
def healthz():
    return jsonify(status="ready")


@app.post("/classify")
def classify():
    top_k = request.args.get("top_k", default=3, type=int)
    if not 1 <= top_k <= 10:
        return jsonify(error={"code": "invalid_top_k"}), 400
    try:
        image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
    except Exception as e:  # PIL raises many types for bad input
        return jsonify(error={"code": "invalid_image", "message": str(e)}), 400
    with torch.no_grad():
        scores = MODEL(PREPROCESS(image).unsqueeze(0)).softmax(dim=1)[0]
    values, indices = scores.topk(top_k)
    predictions = [
        {"rank": r + 1, "index": int(i), "score": float(v)}
        for r, (v, i) in enumerate(zip(values, indices))
    ]
    return jsonify(model="resnet18", predictions=predictions)
