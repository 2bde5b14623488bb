"""Running beyond one process: the embedding encode stage on Ray Data, the search service on Ray Serve.

Pure code: ray, torch and open_clip are imported inside functions, so importing these modules
(the code location does) costs nothing.
"""
