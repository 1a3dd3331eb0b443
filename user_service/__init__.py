"""The user service: users, groups and group membership over gRPC."""
