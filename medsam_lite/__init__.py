"""medsam-lite: fast box-prompted medical image segmentation (lightweight MedSAM) on a CPU."""
__version__ = "0.1.0"
