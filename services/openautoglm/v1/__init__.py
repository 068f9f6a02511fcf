"""Generated protobuf and gRPC stubs for package openautoglm.v1 (do not edit)."""
