"""The shipped student's distillation recipe: prep specs and the slice selection step (see README.md here)."""
