"""imagegen: the imagegen.v1 contract (generated in imagegen.v1) and its helpers.

Importing this package does nothing but define names; the helpers live in
imagegen.contract, imagegen.validation and imagegen.errors.
"""
