"""People detectors for video and anomaly detectors over zone metrics."""
