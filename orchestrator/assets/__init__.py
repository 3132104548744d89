"""Where weights and datasets come from: a local path, ``$ORCHESTRATOR_ASSETS``, the cache, or a download.

Downloads (official names, URLs, a data yaml's ``download:``) go to a temporary file, are checked, and
only then move into the cache, so a partial or corrupt file never sits under its final name.

May import: assets, yolo, leaves
"""

from .datasets import locate_data, resolve_data
from .locations import cache_dir, local_ref
from .weights import locate_weights, resolve_weights

__all__ = ["cache_dir", "local_ref", "locate_data", "locate_weights", "resolve_data", "resolve_weights"]
