"""The runtime shared by every splitlog service.

Server start and graceful stop, health and reflection, configuration, logging,
the domain error registry and its interceptor, client channels, and database
engines with migrations. Nothing domain-specific lives here.
"""
