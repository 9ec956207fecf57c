"""Reports: fidelity evaluation and run reports."""
