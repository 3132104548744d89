"""Specs -> Optuna: the search space, the storage, the study record (every key the driver writes), the Pareto
front, its hypervolume and the held-out split's reveal.

Tensor-free: a study is searched, resumed and ranked without torch.

May import: search, study, leaves
Never imports: torch, torchvision, onnx, onnxruntime
"""
