"""Classical anatomy finders that need no trained model (body, lungs, trachea)."""
