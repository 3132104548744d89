"""MLflow in one place: the client, a study's parent and trial runs, identity and archiving (runs.py, the only
module that builds a client or spells a run filter), the store's folders and preflight (store.py), masked batch
writes (batch.py), the tracker, links into the UI, plots and the Pareto page.

Tensor-free: MLflow is rebuilt from the Optuna study, never from a model.

May import: tracking, search, study, leaves
Never imports: torch, torchvision, onnx, onnxruntime
"""
