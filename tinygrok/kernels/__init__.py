"""Kernels: one file per family, each with its NumPy reference first (the spec and the test
oracle), then the fast kernel, then the public function that dispatches on the engine."""
