"""Data adapters: lattice stores, CIFAR-10 and image folders, the bundled photos."""
