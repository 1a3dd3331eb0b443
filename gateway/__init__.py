"""The gateway: one gRPC address and one REST/JSON address for every service."""
