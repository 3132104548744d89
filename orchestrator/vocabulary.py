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

# where a trial keeps decoded images (yolo/image_cache.py, which keeps its own copy: yolo imports no leaf but errors)
CACHE_MODES = ("auto", "ram", "disk", "none")
# int8 calibration (quantize.py): the ONNX Runtime calibrators, and the defaults a study and `export --int8` use.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# The defaults are bench/bench_int8.py's winner (docs/deploy.md): yolov5n at 320, 64 coco128 val images through ORT
# (float 0.3132), calibrated on the 128 train images, on this AVX2 CPU (no VNNI): percentile calibration,
# per-tensor weights, the first layer float: 0.3169; per-channel 0.3003, all layers int8 0.3051, minmax 0.3044.
# Percentile calibrates about 2.5x slower than minmax (it builds a histogram of every activation).
DEFAULT_METHOD = "percentile"
DEFAULT_IMAGES = 128
# The int8 graph's form (quantize.py Int8Options).
ACTIVATION_TYPES = ("u8", "s8")  # activations uint8 (weights int8: U8S8) or int8 (S8S8)
DEFAULT_ACTIVATIONS = "u8"  # ORT 1.32 on this CPU runs S8S8 convs in float between Q/DQ nodes: 0.46x float
DEFAULT_PER_CHANNEL = False  # per-tensor weight scales: fewer saturating u8 x s8 pair sums in AVX2 kernels
DEFAULT_FLOAT_HEAD = False  # the Detect layer's three output convs stay float too (its decode always does)
DEFAULT_FLOAT_LAYERS = (0,)  # model.0, the 6x6 conv on the image: the one layer whose int8 costs accuracy
CALIB_BATCH = 16  # images per calibration pass: ORT keeps every activation of a pass in memory

MAX_IMGSZ = 8192  # pixels: one 8192x8192 letterboxed image is 200 MB; far beyond what YOLOv5 is trained at
