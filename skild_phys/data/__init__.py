"""Data adapters (lattice stores, CIFAR-10, image folders, the bundled photos) and image-quality metrics."""
