"""Models as first-class: what a model is (its shape and weights, read from its own metadata)
and whether it fits a service's memory budget before a byte is downloaded.

`gguf.py` (GGUF header parser), `shape.py` (the model's shape from GGUF or Hugging Face
metadata) and `fit.py` (the estimate per engine) are pure; `files.py` finds and reads the files.
"""
