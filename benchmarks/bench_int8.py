"""Whether an int8 model can speed up prediction without changing its answers.

Usage::

    python benchmarks/bench_int8.py [--train 60] [--test 200] [--calibration 304]

Trains a head-only run on GalSim cutouts (5 classes), exports it to ONNX as ``skysort
predict`` does, and quantizes the exported graph with ONNX Runtime's static quantization
(QDQ, per-channel int8 weights, uint8 activations, MinMax on ``--calibration`` of the
run's training images through its preprocessing) in three variants: every operator but
the head, convolutions only, and the 1x1 (pointwise) convolutions only. For each it
prints, beside the fp32 graph measured in the same run:

* the model alone, one thread (as each prediction worker runs it), 8 and 32 images per
  call (medians of 5);
* top-1 agreement with fp32 and the cosine between the pooled backbone features, on
  ``--test`` held-out cutouts;

and the cost of decoding a 424 px JPEG into the model's input on one core, from which
the best end-to-end speed-up each variant allows follows:
``(decode + fp32 model) / (decode + int8 model)``, per image and core.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import skysort
from bench_train_predict import machine, versions
from skysort.data.transforms import create_transform
from skysort.models.export import onnx_for_run
from skysort.models.info import read_model_info
from skysort.models.onnx import OnnxModule
from skysort.synth.sets import make_class_folders

FEATURES = "/model/backbone/global_pool/flatten/Flatten_output_0"
QUANTIZED = ["Conv", "Add", "Clip", "GlobalAveragePool", "Mul", "Pad", "Concat", "Gather",
             "Reshape", "Flatten", "Slice", "Transpose", "Unsqueeze"]


class Batches:
    """ONNX Runtime's calibration reader: equal batches of preprocessed images."""

    def __init__(self, images: np.ndarray, size: int = 8) -> None:
        self._it = iter(images[i:i + size] for i in range(0, len(images) - size + 1, size))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {"image": batch}


def with_features(path: Path) -> Path:
    """A copy of the graph that also outputs the pooled backbone features."""
    import onnx

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT,
                                                                 None))
    out = path.with_suffix(".features.onnx")
    onnx.save(model, str(out))
    return out


def outputs(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(with_features(path)), providers=["CPUExecutionProvider"])
    parts = [session.run(None, {"image": images[i:i + 8]}) for i in range(0, len(images), 8)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def rate(path: Path, images: np.ndarray, per_call: int) -> float:
    model = OnnxModule(path, threads=1, batch=per_call)
    model(images[:32])
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model(images[:32])
        times.append(time.perf_counter() - start)
    return 32 / statistics.median(times)


def decode_ms(work: Path, sources: list[Path], transform: object) -> float:
    rng = np.random.default_rng(0)
    files = []
    for i, src in enumerate(sources[:50]):
        big = np.asarray(Image.open(src).resize((424, 424), Image.Resampling.BICUBIC), np.int16)
        big = big + rng.integers(-6, 7, big.shape)
        files.append(work / f"big{i}.jpg")
        Image.fromarray(big.clip(0, 255).astype(np.uint8)).save(files[-1], quality=90)
    start = time.perf_counter()
    for _ in range(3):
        for f in files:
            transform(f)  # type: ignore[operator]
    return 1000 * (time.perf_counter() - start) / (3 * len(files))


def main() -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=304)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skysort-int8-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train = make_class_folders(work / "train", args.train, size=128, fmt="jpg", seed=2)
            run = skysort.train(train, project=str(work / "runs"), name="r",
                                finetune="head").run_dir
            test = make_class_folders(work / "test", args.test // 5, size=128, fmt="jpg", seed=9)
        transform = create_transform(read_model_info(run).preprocess)
        rng = np.random.default_rng(0)
        train_files = sorted(train.rglob("*.jpg"))
        pick = rng.choice(len(train_files), min(args.calibration, len(train_files)), replace=False)
        calibration = np.stack([transform(train_files[i]) for i in pick])
        test_files = sorted(test.rglob("*.jpg"))
        held_out = np.stack([transform(f) for f in test_files])
        fp32 = work / "fp32.onnx"
        quant_pre_process(str(onnx_for_run(run)), str(fp32), skip_symbolic_shape=True)
        import onnx

        convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
        spatial = [n for n in convs if "conv_dw" in n or "conv_stem" in n]
        variants = {"fp32": fp32}
        for name, ops, exclude in (("int8, every operator but the head", QUANTIZED, []),
                                   ("int8, convolutions only", ["Conv"], []),
                                   ("int8, pointwise convolutions only", ["Conv"], spatial)):
            out = work / f"int8_{len(variants)}.onnx"
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(str(fp32), str(out), Batches(calibration),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=ops, nodes_to_exclude=exclude,
                                calibrate_method=CalibrationMethod.MinMax)
            variants[name] = out
        probs, feats = outputs(fp32, held_out)
        decode = decode_ms(work, test_files, transform)
        print(f"machine:  {machine()}")
        print(f"versions: {versions()}")
        print(f"model:    head-only run, 5 GalSim classes x {args.train}, 128 px; "
              f"{len(held_out)} held-out cutouts; calibration on {len(calibration)} "
              "training images")
        print(f"decoding a 424 px JPEG into the model's input: {decode:.2f} ms per image, "
              "one core\n")
        print("| model | 1 thread, 8 per call | 32 per call | top-1 agreement with fp32 | "
              "feature cosine (median, min) | best end-to-end speed-up |")
        print("|---|---|---|---|---|---|")
        base = rate(fp32, held_out, 8)
        for name, path in variants.items():
            r8, r32 = rate(path, held_out, 8), rate(path, held_out, 32)
            p, f = outputs(path, held_out)
            cos = (f * feats).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(feats, axis=1)
            agree = float((p.argmax(1) == probs.argmax(1)).mean())
            bound = (decode + 1000 / base) / (decode + 1000 / r8)
            print(f"| {name} | {r8:.1f} images/s ({r8 / base:.2f}x) | {r32:.1f} | "
                  f"{agree:.4f} | {np.median(cos):.4f}, {cos.min():.4f} | {bound:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
