"""Inference backends shared by evaluation and anything else that needs a model.

Importing this package registers every backend; heavy libraries load inside each backend.
"""
