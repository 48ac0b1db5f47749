"""Fastfood on Triton: `generator` (B, G, Π in Triton), `kernels` (the fused kernels) and
`launch` (geometry, launchers and the calls `fastfood.FastfoodDelta` makes). Imported only for
CUDA tensors or under TRITON_INTERPRET=1: a CPU-only process never needs triton."""
