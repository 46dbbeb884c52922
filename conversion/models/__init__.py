"""Model definitions: UIE (Paddle) and SPO (PyTorch)."""
