"""Financial-ML labels over bars: numba kernels, their pure-Python reference and the label assets' helpers."""
