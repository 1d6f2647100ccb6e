"""Generated gRPC stubs of package neuronmap.v1 (`make proto` regenerates them; do not edit)."""
