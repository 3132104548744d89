"""YOLOv5 pruning sweep orchestrator."""
