"""One trial behind one contract: ``TrialSpec`` in, ``TrialResult`` out; the real trial (prune, fine-tune,
deploy, measure, held-out) and the fake one (tensor-free, for tests and benchmarks), and the held-out validation.

The real trial and the fake one never import each other (tests/test_imports.py).

May import: trial, study, prune, deploy, assets, yolo, leaves
"""
