"""How to look at the world: observations, no pytest."""
