"""Reports: fidelity evaluation, run reports, image metrics."""
