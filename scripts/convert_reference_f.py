"""Convert the reference code's pre-trained MLP (raw pixels in [0, 1]) into a parm model file for
standardised inputs, by folding the input scaling into its first layer.

parm feeds F ``z = (x - mean) / std`` (the datamodule's training statistics); the reference MLP was
trained on ``x`` in [0, 1]. With ``x = std * z + mean`` its first layer ``W x + b`` equals
``(W * std) z + (b + W @ mean)``, so the converted F gives the same logits as the reference's on every
input. The script checks that on the test split and prints both accuracies.

    python scripts/convert_reference_f.py --data fashion_mnist \\
        --state ../shared/data/reference_F/fashion_mnist_base_mlp.pt --out outputs/reference_F/fashion_mnist.pt

Then ``python train.py data=fashion_mnist base.ckpt=outputs/reference_F/fashion_mnist.pt ...``.
"""

from __future__ import annotations

import argparse

import torch
from hydra.utils import instantiate

from parm.data.transforms import to_unit_float
from parm.models.checkpoint import build_from_spec, save_model
from parm.pipeline import compose

# The reference network: attribute ``nn`` = Sequential(Linear(784, 200), ReLU, Linear(200, 100), ReLU, Linear(100, 10)).
REFERENCE_KEYS = ("nn.0", "nn.2", "nn.4")
PARM_KEYS = ("net.1", "net.3", "net.5")  # parm.models.mlp.MLP: Flatten first


def fold(state: dict[str, torch.Tensor], mean: float, std: float) -> dict[str, torch.Tensor]:
    """The reference state dict as parm MLP weights for inputs standardised with ``mean``/``std``."""
    missing = [f"{k}.{p}" for k in REFERENCE_KEYS for p in ("weight", "bias") if f"{k}.{p}" not in state]
    if missing:
        raise ValueError(f"not a reference base-mlp state dict: missing {missing}; got keys {sorted(state)}.")
    out = {f"{new}.{p}": state[f"{old}.{p}"].float().clone() for old, new in zip(REFERENCE_KEYS, PARM_KEYS, strict=True)
           for p in ("weight", "bias")}
    weight = out["net.1.weight"]
    out["net.1.bias"] = out["net.1.bias"] + weight.sum(dim=1) * mean
    out["net.1.weight"] = weight * std
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Hydra data config: mnist or fashion_mnist")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--state", required=True, help="the reference state dict (reference_F/*.pt)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cfg = compose([f"data={args.data}", f"data_dir={args.data_dir}", "k=1"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    mean, std = float(datamodule.mean[0]), float(datamodule.std[0])
    spec = {"_target_": "parm.models.mlp.MLP", "input_shape": list(datamodule.input_shape), "num_classes": 10,
            "hidden": [200, 100]}
    model = build_from_spec(spec)
    model.load_state_dict(fold(torch.load(args.state, weights_only=True), mean, std))
    model.eval()
    x, y = datamodule.split("test")
    with torch.no_grad():
        parm_logits = model(datamodule.normalize(x))
        reference = build_from_spec(spec)
        reference.load_state_dict({f"{new}.{p}": torch.load(args.state, weights_only=True)[f"{old}.{p}"]
                                   for old, new in zip(REFERENCE_KEYS, PARM_KEYS, strict=True)
                                   for p in ("weight", "bias")})
        reference_logits = reference.eval()(to_unit_float(x))
    gap = float((parm_logits - reference_logits).abs().max())
    acc, ref_acc = (float((logits.argmax(1) == y).float().mean()) for logits in (parm_logits, reference_logits))
    if gap > 1e-3:
        raise SystemExit(f"folding changed the logits by up to {gap:.2e}; not saved.")
    save_model(args.out, model, spec, meta={"test_acc": acc, "data": cfg.data._target_, "source": "reference base-mlp",
                                            "normalization": {"mean": [mean], "std": [std]}})
    print(f"wrote {args.out}: test accuracy {acc:.4f} on standardised inputs, reference on [0, 1] pixels "
          f"{ref_acc:.4f}, largest logit difference {gap:.1e}")


if __name__ == "__main__":
    main()
