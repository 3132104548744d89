"""Pure-PyTorch YOLOv5: model, checkpoints, data, loss, training and validation.

Imports only torch, torchvision, numpy, opencv, pycocotools and the standard library.

May import: yolo, errors, bounded_yaml
"""
