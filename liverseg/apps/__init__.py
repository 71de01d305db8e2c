"""Applications on top of training, export and inference: EDA, figures, synthetic data, the demo."""
