"""What runs with a compiled cell: `cellc.load` and its cache, recurrent layers, the
regularizers' masks, and the PyTorch module."""
