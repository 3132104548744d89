"""What users ship and what it costs: export (official .pt, ONNX, int8), the ONNX model check and validation,
the ONNX Runtime sessions, measurement and interleaved timing.

May import: deploy, prune, yolo, leaves
"""
