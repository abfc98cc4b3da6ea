"""``python -m tasks.console_relay``: this node's console relay, the privileged end of browser terminals.

Web consumers (``webui.console``) never touch a container: they send
messages to this node's named channel on the channel layer
(``console.<node>``), and the relay, running as root on the node, starts
the terminal process and streams its bytes back to the consumer's own
channel::

    browser ─ws─> consumer (web tier, no root) ─channel layer─> relay (node, root) ─pty─> shell in the container

What the two ends say is ``tasks.console_protocol``. Here ``daemon`` is the
process (its channel, the dispatch of messages to sessions, start-up,
signals) and ``relay`` one session's terminal (attach, pty, flow control,
following the console log), with ``logfollow`` the console log read-only and
the terminal's processes.
"""
