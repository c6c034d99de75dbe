"""The executor: renders the image a plan describes, stores it, and says where it is."""
