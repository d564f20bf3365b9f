"""AToM: Amortized Text-to-Mesh (arXiv 2402.00867), an open reference implementation."""
__version__ = "0.1.0"
