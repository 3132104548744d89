"""MLflow in one place: the client, a study's parent and trial runs, identity, the tracker, links into the UI,
plots and the Pareto page.

Tensor-free: MLflow is rebuilt from the Optuna study, never from a model.

May import: tracking, search, study, leaves
Never imports: torch, torchvision, onnx, onnxruntime
"""
