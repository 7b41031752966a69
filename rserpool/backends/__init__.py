"""Authentication and authorization backends that talk to external servers
(RADIUS, LDAP).  These are shell code: they use Twisted and the network."""
