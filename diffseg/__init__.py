"""diffseg: a discrete-diffusion mask-prior refiner on top of frozen segmentors (DDPS companion)."""

__version__ = "0.1.0"
