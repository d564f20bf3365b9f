"""AToM: Amortized Text-to-Mesh (arXiv 2402.00867), an open reference implementation.

    from atom import AToMPipeline
    pipe = AToMPipeline.from_pretrained("pretrained/atom-shapes64")
    pipe("a red cube").meshes[0].export("red_cube.glb")
"""
__version__ = "0.1.0"
__all__ = ["AToMPipeline", "AToMPipelineOutput", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that `import atom` (and `python -m atom --help`) stays light.
    if name in ("AToMPipeline", "AToMPipelineOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'atom' has no attribute {name!r}")
