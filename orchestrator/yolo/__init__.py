"""Pure-PyTorch YOLOv5: model, checkpoints, data, loss, training and validation.

Imports only torch, torchvision, numpy, opencv, pycocotools, the standard library, and rich for the one
progress bar a first label scan shows on a terminal.

May import: yolo, errors, bounded_yaml
"""
