"""The host side of a workspace: the :class:`~.host.Host` (orchestrator, config files), one
:class:`~.session.Session` per client connection, and the transport that frames a
connection's messages (:mod:`.transport`)."""
