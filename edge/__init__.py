"""certwright-edge: the agent on each router host. It keeps every certificate its router serves in a
local store on disk, follows Certwright's change feed (snapshot, then long-poll), picks each name's
certificate by its own clock, and drives the router (HAProxy, Caddy or plain files). No Django here:
it ships in the same wheel as the CLI and talks to Certwright over HTTP only."""
