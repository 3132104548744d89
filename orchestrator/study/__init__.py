"""The study file -> frozen specs: the spec, the file reader, the key reader, the search dimensions, the input
checks and the default stores.

Validated once at the edge: past this package the program only sees typed, frozen specs. The input checks
(``checks``) look at weights and data without running anything, so they read the model code's loaders.

May import: study, assets, prune, yolo, leaves
"""
