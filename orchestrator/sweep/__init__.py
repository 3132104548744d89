"""The study loop: the driver (ask -> Ray worker -> tell -> MLflow), the lease, resume and signals, Ray
dispatch and the progress view.

It sees specs and results, never a tensor: trials run behind the contract of :mod:`orchestrator.trial`.

May import: sweep, search, tracking, trial, study, leaves
Never imports: torch, torchvision, onnx, onnxruntime
"""
