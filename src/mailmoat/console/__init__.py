"""The web console (issue 14): a separate HTTP(S) listener for the mail administrator, run in
its own thread with its own event loop, so it never runs on the sessions' loops. It reads the
gateway's state the way the admin endpoint does (the stats snapshot, the ban list) and asks the
gateway's loop for it."""
