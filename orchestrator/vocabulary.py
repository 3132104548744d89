"""The words a study file and the CLI share with the pruning code, owned here and imported by both.

Torch-free on purpose: the study file is checked (and bad input refused in milliseconds) without loading torch.
"""

from __future__ import annotations

METHODS = ("structured", "unstructured")  # what a study or `prune --method` asks for
GRANULARITIES = ("layer", "block", "stage")  # how convs are grouped under one ratio (prune/layers.py)
UNSTRUCTURED_IMPORTANCES = ("l1", "l2")  # for single weights |w| and w**2 rank the same: both are magnitude
STRUCTURED_IMPORTANCES = ("l1", "l2", "bn_scale")  # bn_scale: BatchNorm gamma, whole channels only
DATA_IMPORTANCES = ("output_error",)  # structured, needs calibration images (prune/activation_importance.py)
IMPORTANCES = (*STRUCTURED_IMPORTANCES, *DATA_IMPORTANCES)
RECOVERY_STEPS = ("compensate", "reconstruct", "recalibrate")  # after a channel cut, in this order (recovery.py)
RECOVERY_DEFAULT = ("compensate", "reconstruct")  # docs/pruning.md: recalibrate hurts after reconstruct
RECOVERY_IMAGES = 32  # train images that calibrate recovery (docs/pruning.md measured with 32)

# int8 calibration (quantize.py): the ONNX Runtime calibrators, and the defaults a study and `export --int8` use.
# where a trial keeps decoded images (yolo/image_cache.py, which keeps its own copy: yolo imports no leaf but errors)
CACHE_MODES = ("auto", "ram", "disk", "none")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Measured on yolov5n at 320, coco128 val through ORT (float 0.3132), calibrating on coco128 train:
# minmax 32 images 0.2961, 128 images 0.3065 (0.3100 with a float head); percentile 32 0.2970 (4x slower);
# entropy 32 0.2961 (3x slower). More images help minmax most; all of coco128 train is 128.
DEFAULT_METHOD = "minmax"
DEFAULT_IMAGES = 128
# The int8 graph's form (quantize.py Int8Options; bench/bench_int8.py times and scores each, docs/deploy.md).
ACTIVATION_TYPES = ("u8", "s8")  # activations uint8 (weights int8: U8S8) or int8 (S8S8)
DEFAULT_ACTIVATIONS = "u8"
DEFAULT_FLOAT_HEAD = False  # the Detect layer's three output convs stay float too (its decode always does)
CALIB_BATCH = 16  # images per calibration pass: ORT keeps every activation of a pass in memory

MAX_IMGSZ = 8192  # pixels: one 8192x8192 letterboxed image is 200 MB; far beyond what YOLOv5 is trained at
