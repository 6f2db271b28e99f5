"""DeepLab models, checkpoints, prediction, training and the dense CRF (torch, no Qt)."""
