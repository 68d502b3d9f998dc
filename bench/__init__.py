"""The benchmark harness (make bench): every figure is a ratio against a baseline run back to back."""
