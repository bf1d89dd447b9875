"""Internal limits: every fixed number that shapes mailmoat's behaviour, each with why.

What an administrator would tune is a setting (`mailmoat.config`, listed by `mailmoat config
defaults`); what is here is not: bounds that keep memory and time finite whatever the input
(invariant 3), sizes of caches and batches chosen for speed, and pacing of internal work.
Modeled on Postfix's mail_params.h: one name, one value, one line of why. Modules import their
limits from here; tests/test_limits.py fails when a new behaviour constant appears in src/
outside this table (only protocol constants from RFCs, and the sans-IO engine's own, which may
import nothing outside smtp/, are listed there instead).
"""

from __future__ import annotations

KiB = 1024
DAY = 86400.0

# --- configuration files and values (config_checks) -------------------------------------------
MAX_CONFIG_FILE = 1024 * KiB
"""Largest configuration file read, in octets (`config check /dev/zero` must return)."""
MAX_PEM_FILE = 1024 * KiB
"""Largest certificate, key, CA or password file read by the checks, in octets."""
MAX_SECONDS = 365 * DAY
"""Largest value of any float setting (they are seconds or fractions): one year."""
MAX_INT = 2**31
"""Largest value of any integer setting (message sizes are capped at 2 GiB)."""
MIN_PUBLIC_PREFIX = {4: 16, 6: 32}
"""Widest relay network outside private space, by IP version: no setting opens the relay to the
Internet."""

# --- listening and accepting (server/listener, server/front) -----------------------------------
ACCEPT_BATCH = 64
"""Connections accepted per turn of the event loop and listening socket."""
ACCEPT_DRAIN = 512
"""Connections the supervisor takes from the kernel's accept queue in one turn, so that a known
client's among them is admitted at once (server/listener.py); the others wait their turn,
ACCEPT_BATCH a turn."""
LISTEN_BACKLOG = 4096
"""Kernel accept queue length asked for (Linux caps it at net.core.somaxconn)."""
EMFILE_PAUSE = 0.5
"""Seconds accepting pauses when the process is out of file descriptors."""
FD_RESERVE = 64
"""File descriptors kept free for listeners, the downstream pool, spool files and logs."""
HOUSEKEEPING_TICK = 0.25
"""Seconds between housekeeping runs (stress mode's end, loop-lag gauge)."""

# --- PROXY protocol (server/proxy_header, server/proxied) ---------------------------------------
PROXY_HEADER_TIMEOUT = 5.0
"""Seconds a connection from a trusted proxy has to send its whole PROXY header (HAProxy sends
it with its first packet); past it the connection is closed."""
PROXY_PENDING_MAX = 1024
"""Connections from trusted proxies whose header is still being read, at once: they are not yet
admitted (no address to count), so this bounds them; past it a new one is closed."""
PROXY_V2_MAX_LENGTH = 1024
"""Longest v2 address block in octets, TLVs included (the spec allows 65,535; HAProxy's TLVs
for TLS or a unique id are a few hundred): a longer one is refused, not read."""

# --- closing sessions in crowds (server/gateway) -----------------------------------------------
CLOSE_RATE = 4000.0
"""Deadline closes per second: a crowd of idle clients that connected together, and so time
out together, is closed at this pace so that it cannot stall everyone else."""
CLOSE_BURST = 40
"""Deadline closes that may happen at once before CLOSE_RATE paces them."""
ADOPTS_PER_TURN = 8
"""Connections handed over by the supervisor that a process starts sessions for in one turn of
its event loop (the connect checks, their DNS queries, a transport and a session each, about
half a millisecond); the rest wait for the next turn. A packet of 64 started in one turn took a
worker 30-60 ms of CPU while its other sessions waited."""
CLOSES_PER_TURN = 8
"""Deadline closes in one turn of the event loop; the next ones wait for the next turn. A close
costs a few hundred microseconds (the 421, the close, the log line, the supervisor told): a
turn that ran a loop turn's worth of CLOSE_RATE after a slow turn (a hundred closes and more)
made every other session of the process wait tens of milliseconds."""
STRESS_SPREAD = 1.0
"""Seconds over which the sessions that stress mode's tighter deadlines catch are closed, so
that thousands of idle clients are not all closed in one turn of the event loop."""

# --- supervisor and workers (server/supervisor, server/link) -----------------------------------
LOCAL_SESSIONS = 2
"""Sessions the supervisor runs itself before it hands connections over: a light load (a
sender at a time) never waits for a hand-over, a heavy one goes to the workers. Counted when
the decision is made (`local_slots.LocalSlots`), so a burst that arrives at once is spread too."""
LOCAL_RATE = 10
"""New connections a second up to which the supervisor still runs sessions itself; past it
every connection goes to a worker, so the process that accepts for everyone runs none."""
LANE_SESSIONS = 500
"""Sessions the clean-lane worker (`server.clean_lane`) runs at once; known clients past it go
to the other workers, so many addresses that each delivered once cannot crowd the lane out of
its purpose (a quiet loop for the known senders)."""
WORKER_SPREAD = 2
"""Sessions a worker may hold above the least busy one and still get the next connection
because it had the last one."""
WORKER_START_TIMEOUT = 60.0
"""Seconds the workers have to start."""
WORKER_RESPAWN_DELAY = 1.0
"""Seconds before a worker that died is replaced (one that cannot start is not retried in a
tight loop)."""
SNAPSHOT_TIMEOUT = 2.0
"""Seconds a worker has to send its counters for `mailmoat stats`."""
HOLD_MAX = 1000
"""Greeted connections the supervisor holds at once until their client talks (`server.hold`):
a flood that closes after the 220 keeps a few held (1,000 a second leaving within 100 ms is
100); past it a connection is handed over at once, as without the hold."""
HOLD_PER_TURN = 32
"""Held connections whose readiness is handled in one turn of the supervisor's event loop (a
peek and a close or a hand-over each); the rest wait for the next turn."""
HOLD_TRIGGER = 10
"""Clients that close after the 220 without a word, within `HOLD_WINDOW` seconds, that switch
the supervisor's hold on (a health check or an odd prober now and then stays below it)."""
HOLD_WINDOW = 10.0
"""Seconds over which `HOLD_TRIGGER` greet-and-leave clients are counted."""
HOLD_ENGAGED = 60.0
"""Seconds the hold stays on after the count last reached `HOLD_TRIGGER` (held clients that
leave keep counting, so it stays on while the flood lasts)."""
HOLD_TIME = 1.0
"""Most seconds a greeted, silent connection is held before it is handed over anyway: a real
client talks within a round trip of the 220, a flood client closes within one; a silent one
is left to its session's deadlines (which count the time held)."""
KNOWN_SENDERS_MAX = 10_000
"""Client addresses the supervisor remembers as having delivered a message lately: their new
connections skip the hold (`server.hold`) and go to a worker at once, so a regular sender's
EHLO does not wait for a turn of the supervisor's event loop under a flood. The least
recently seen go first."""
KNOWN_SENDER_TTL = 3600.0
"""Seconds a clean delivery vouches for its client's address (renewed by each one)."""
LINK_MAX_MESSAGE = 64 * KiB
"""Largest supervisor-worker message in octets (a stats snapshot is the largest, a few KiB)."""
LINK_MAX_QUEUED = 10_000
"""Link messages that may wait for room in the socket buffer; past that the link is broken."""
LINK_MAX_PENDING = 10_000
"""Link requests waiting for their answer at once; more fail at once."""
LINK_READS_PER_TURN = 64
"""Messages handled per turn of the event loop (whole packets: one more may pass it), so one
busy link cannot starve the sessions of its process."""
LINK_MAX_FDS = 64
"""Descriptors per link packet (the kernel allows 253); a larger batch is several packets."""
LINK_REQUEST_TIMEOUT = 5.0
"""Seconds a link request waits for its answer unless the caller says otherwise."""
REMOTE_STORE_TIMEOUT = 5.0
"""Seconds a worker's store call waits for the supervisor."""

# --- the Redis store (store/redis_store, store/breaker, store/ban_feed) -------------------------
REDIS_TIMEOUT = 0.5
"""Seconds one Redis call (connecting, waiting for a pooled connection, or the answer) may take
before it counts as failed. A call that timed out is not retried: its outcome is unknown."""
REDIS_POOL = 32
"""Connections to Redis a node holds at most (a call that finds none free waits REDIS_TIMEOUT)."""
BREAKER_FAILURES = 3
"""Consecutive failed Redis calls that open the circuit breaker (calls go to the local store)."""
BREAKER_OPEN = 1.0
"""Seconds the breaker stays open before one probe call may try Redis again."""
REDIS_HEARTBEAT = 1.0
"""Seconds between a node's heartbeats (its live-node count, and the breaker's probe)."""
REDIS_NODE_ALIVE = 5.0
"""Seconds a node counts as live after its last heartbeat (the fallback's scale)."""
REDIS_SLOTS_TTL = 3600.0
"""Seconds a cluster-wide count of open connections (`slots:`) lives after its last report
(a node reports its open ones again every SLOTS_REFRESH)."""
SLOTS_REFRESH = 10.0
"""Seconds after which a node sends its count of open connections for a key again, unchanged
(store/own_counts): a count Redis or another node lost (a restart, FLUSHALL) is back within
about this long."""
SLOTS_REFRESH_MAX = 5_000
"""Counts a node sends again per heartbeat at most (past SLOTS_REFRESH x this many keys with
open connections, each key's turn comes later)."""
SLOTS_REPORT_DELAY = 0.05
"""Seconds a node's counts for admission (open connections per address and network, connection
rate events) wait before they are sent to Redis, so that those of a busy address go as one
call; the other nodes hear them about this much later (the documented overshoot)."""
PEER_COUNTS_MAX = 10_000
"""Addresses and networks whose open connections on the other nodes a node holds (past it,
one with the fewest is dropped and counted as a floor: store/peer_open), and as many windows
of their connection events (the oldest dropped first)."""
PEER_FLOOR_HOLD = 20.0
"""Seconds (one to two periods) the floor a dropped key of open connections sets lasts: more
than SLOTS_REFRESH, after which the nodes holding it have sent its count again."""
PEER_EVENTS_MAX = 1_000
"""Events another node reported that one message, one answer or one window holds at most (a
rate limit above this is counted this high at most from the others' part)."""
BAN_FEED_RETRY = 0.5
"""Seconds before the ban feed subscribes again after losing its connection."""
BAN_RESYNC_MAX = 100_000
"""Bans read from Redis at most when the ban feed (re)subscribes, and as many keys of open
connections (store/peer_open keeps PEER_COUNTS_MAX of them)."""
BAN_RESYNC_BATCH = 500
"""Bans read per round trip during that resync."""
REPLAY_MAX = 10_000
"""Ban changes made while Redis was away kept to write there when it returns."""

# --- admin endpoint and health (server/admin, server/health) -----------------------------------
ADMIN_MAX_CLIENTS = 8
"""Admin connections served at once (invariant 3)."""
ADMIN_HEALTH_SLOTS = 2
"""Admin connections past ADMIN_MAX_CLIENTS that may still ask for /healthz (anything else gets
503), so a monitor gets its answer while slow clients hold the other slots; past these, 503."""
ADMIN_HEAD_TIMEOUT = 1.0
"""Seconds an admin client has to send its request head: the administrator's tools send it at
once, so a slow client holds a slot for little time."""
ADMIN_MAX_REQUEST = 8192
"""Longest admin request head (request line and header fields) read, in octets."""
ADMIN_REQUEST_TIMEOUT = 5.0
"""Seconds for an admin answer to be made (a worker's stats) and sent."""
ADMIN_CLIENT_TIMEOUT = 5.0
"""Seconds `mailmoat stats`, `ban` and `unban` wait for the running gateway's answer."""

# --- web console (console/) ---------------------------------------------------------------------
CONSOLE_MAX_CLIENTS = 16
"""Console connections served at once; past it 503 (invariant 3)."""
CONSOLE_MAX_HEAD = 8192
"""Longest console request head, in octets."""
CONSOLE_MAX_BODY = 4096
"""Longest console request body (a login or ban form), in octets."""
CONSOLE_READ_TIMEOUT = 5.0
"""Seconds a console client has to send its whole request."""
CONSOLE_MAX_SESSIONS = 256
"""Console logins kept at once; the oldest is dropped past it."""
CONSOLE_LOGIN_FAILURES = 5
"""Failed logins a network (CONSOLE_LOGIN_PREFIX_V4/V6) may make per CONSOLE_LOGIN_WINDOW
before it gets 429."""
CONSOLE_LOGIN_GLOBAL_FAILURES = 20
"""Failed logins from everywhere together per CONSOLE_LOGIN_WINDOW before every login gets 429
(bounds the guesses, and the argon2 work, of an attacker who rotates networks)."""
CONSOLE_LOGIN_WINDOW = 120.0
"""Seconds over which failed console logins are counted (short: a lock-out ends soon)."""
CONSOLE_LOGIN_PREFIX_V4 = 24
"""IPv4 failed logins are counted per /24 (all of 127/8 is one user's to pick from)."""
CONSOLE_LOGIN_PREFIX_V6 = 64
"""IPv6 failed logins are counted per /64 (one site's subnet)."""
CONSOLE_LOGIN_ADDRESSES = 4096
"""Networks whose failed logins are remembered at once (the oldest forgotten past it)."""
CONSOLE_LOGIN_VERIFIERS = 1
"""Console password checks (argon2, a CPU- and memory-heavy hash) run at once, in a thread of
their own; further logins wait their turn, so a login flood takes at most one core."""
CONSOLE_HISTORY_MINUTES = 60
"""Minutes of accepted/refused counts the console's chart keeps."""
CONSOLE_SAMPLE_EVERY = 10.0
"""Seconds between the console's readings of the gateway's counters."""
CONSOLE_RECENT_TRANSACTIONS = 40
"""Transaction summaries each process keeps for the console's recent transactions page (the
newest). They travel in a worker's stats snapshot: with CONSOLE_FIELD_CHARS and
CONSOLE_RECIPIENTS_SHOWN they stay far below LINK_MAX_MESSAGE (a test checks the worst case)."""
CONSOLE_FIELD_CHARS = 80
"""Characters of a sender, a recipient or a result kept in a transaction summary."""
CONSOLE_RECIPIENTS_SHOWN = 3
"""Recipients named in a transaction summary (then "+N more")."""
CONSOLE_OFFENDERS = 512
"""Client addresses whose refusals each process counts for the console's top offenders; when
full, the lower half is forgotten (the heavy hitters stay: amortised O(log n) a refusal)."""
CONSOLE_TOP_OFFENDERS = 25
"""Addresses the top offenders page lists; a snapshot carries twice as many of each process's."""
CONSOLE_CHART_WIDTH = 600
"""Width of the console's chart, in SVG units."""
CONSOLE_CHART_HEIGHT = 160
"""Height of the console's chart, in SVG units."""
CONSOLE_USERS_MAX = 1000
"""Users a console users_file may hold."""
HEALTH_PROBE_EVERY = 5.0
"""Seconds between two probes of the downstream for /healthz, however often it is asked."""
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the latency histograms' buckets; one more counts the rest."""

# --- message data (message, headers) -----------------------------------------------------------
SPOOL_CHUNK = 64 * KiB
"""Octets a spool hands out per chunk when a message is read back."""
HEADER_MAX_KEPT = 100
"""Header fields of each wanted name kept (all are counted); more is a defect of the block."""
HEADER_MAX_FIELD = 64 * KiB
"""Octets of one wanted header field kept."""
HEADER_SCAN_CHUNK = 8192
"""Octets read at a time for the header scan of a spooled message: most header blocks fit,
and the body is not read."""

# --- defences (policy/) ------------------------------------------------------------------------
MAX_REPLY_DELAY = 30.0
"""Upper bound on the sum of the delays the checks ask for on one command."""
RATE_RECHECK = 1.0
"""Seconds an address found over its rate is refused locally before the store is asked again."""
RATE_BLOCKED_CACHE = 100_000
"""Addresses found over their rate that admission remembers locally (for RATE_RECHECK)."""
STRIKE_COOLDOWN = 1.0
"""Seconds during which further strikes of one address are folded into the last one."""
BAN_CACHE_SIZE = 100_000
"""Addresses each local ban cache remembers at most."""
MAX_NETWORK_BANS = 10_000
"""Network bans the administrator may hold at once (each is checked at every accept)."""
WIDEST_BAN = {4: 8, 6: 16}
"""Shortest prefix an administrator's ban may have: a wider one would shut out the Internet."""
LONGEST_BAN = 366 * DAY
"""Longest ban an administrator may set, in seconds."""
LISTED_BANS = 10_000
"""Bans `mailmoat bans` lists at most."""
MANUAL_BAN_TIME = 3600.0
"""Seconds a ban set by hand (`mailmoat ban`, POST /bans) lasts unless its request says."""
HARVEST_KEY_CACHE = 65536
"""Client addresses whose store keys are kept ready (the cache is emptied when full)."""
HARVEST_CLEAN_TRUST = 1.0
"""Seconds a worker trusts a store answer that a client address has no harvest ban and scores
below every tarpit threshold, so that the connections and RCPTs of ordinary senders cost no
store round trip (a shared store's); its own unknown recipients end that trust at once, other
workers' and nodes' within this bound."""
FCRDNS_MAX_NAMES = 10
"""PTR names of a client tried for forward confirmation (RFC 7208's limit for ptr)."""
SPF_MAX_ROUNDS = 200
"""SPF evaluations of one identity at most (one per record fetched)."""
SPF_MAX_READ = 512 * KiB
"""Octets of TXT records one SPF check may read, summed over its rounds (each round reads
every record fetched so far again): a check reaching it is permerror, as one past RFC 7208's
lookup limits. A 3 KiB record ahead of ten mx mechanisms of ten names each (113 rounds) reads
345 KiB; a 12 KiB one read 1.3 MiB (over a second of CPU) before this bound."""
SPF_RESULTS_KEPT = 1024
"""SPF result objects of cached outcomes kept, made once."""
SPF_MAX_EXPLANATION = 512
"""Characters of an SPF explanation kept: the sender's domain writes it (exp=, up to a whole
DNS answer), and results are cached."""
MAX_RSA_BITS = 8192
"""Largest DKIM RSA key verified: RFC 8301 3.2 asks for 1024 to 4096 bits; larger MAY be
refused."""
MAX_RSA_EXPONENT_BITS = 64
"""Longest DKIM RSA exponent, as OpenSSL for moduli over 3072 bits: the sender's domain
chooses it, and a modulus-long one costs a second of CPU per signature (65537: under 1 ms)."""
DKIM_KEYS_KEPT = 256
"""DKIM key records (and RSA moduli) kept parsed: the same few keys sign most mail."""
DKIM_CACHED_RECORD = 4 * KiB
"""Longest DKIM key record (and p= value) kept parsed: an 8192-bit RSA key's record is about
1.4 KB. A longer one (a DNS answer holds up to 64 KiB) is parsed for each use, so the parsed
keys kept hold at most `DKIM_KEYS_KEPT` times this (64 KiB records held 46 MiB)."""
DKIM_MAX_SIGNED_NAMES = 100
"""Most names in one DKIM signature's h= that is verified: real signers list under 40 (some
twice, to oversign); past it the signature gets dkim=policy, unverified (dkim_rules)."""
DKIM_MAX_HEADER_WORK = 200_000
"""Most (h= names x header fields) of one signature that is verified: dkimpy looks for each
name through every field (6,000 names over 40,000 fields: 17 s of CPU); 200,000 is ~15 ms."""
MAX_FROM_FIELD = 4096
"""Most octets of From fields (as sent, folded; all of a message's From fields together: RFC
5322 allows one) whose addresses are parsed; past it the author is unreadable, without any
parsing (the address parser and the "@" fallback cost far more than linear time on crafted
input). A real From with a few display names is well under 1 KiB, and 4 KiB still holds
`MAX_AUTHOR_DOMAINS` + 1 long addresses."""
MAX_AUTHOR_DOMAINS = 10
"""Distinct author domains evaluated by DMARC for one message (each costs up to two TXT
lookups); the others count as the strictest outcome."""
DMARC_ORG_CACHE = 4096
"""Organizational domains and the author domains of From fields remembered (each, least
recently used dropped first)."""
DMARC_CACHED_LENGTH = 512
"""Longest input (domain, From field, record, rendered result) the DMARC and
Authentication-Results caches keep: longer is computed each time, so caches stay small."""
DMARC_RESULTS_KEPT = 1024
"""DMARC results remembered by what decides them (least recently used dropped first)."""
DMARC_RECORDS_KEPT = 4096
"""Parsed DMARC records remembered (least recently used dropped first)."""
AUTH_RESULTS_CACHE = 1024
"""Authentication-Results fields remembered by what they say (least recently used dropped
first): the messages of one sender repeat the same few."""

# --- the DNS cache (dns/resolver) -------------------------------------------------------------
DNS_MAX_CACHED_ANSWER = 16 * KiB
"""Heaviest answer the DNS cache keeps, as accounted (records + overheads): what the checks
read (SPF records, DKIM keys, DMARC policies) is far smaller; a bigger one is used, not kept."""
DNS_ENTRY_OVERHEAD = 400
"""Octets one cached answer costs besides its records (Answer, key tuple, name, dict node),
as measured with tracemalloc on CPython 3.11."""
DNS_RECORD_OVERHEAD = 50
"""Octets one cached record costs besides its data (the bytes or str object, its slot)."""

# --- the packet filter (packetfilter/) ---------------------------------------------------------
PACKETFILTER_MAX_ELEMENTS = 65536
"""Most elements in each of the packet filter's kernel sets (and bans waiting for the next
batch): the kernel memory it may take stays bounded; a ban past it is enforced by mailmoat."""
PACKETFILTER_BATCH = 4096
"""Most element updates in one `nft -j -f -` call (a wave of bans is split in such batches)."""
PACKETFILTER_TIMEOUT = 10.0
"""Seconds one `nft` call may take before it is killed and counted as failed."""
PACKETFILTER_SYNC = 5.0
"""Seconds between two comparisons of the kernel sets with the store's bans: bans made and
lifted by other nodes (a shared store) reach this node's filter within that."""
PACKETFILTER_PRIORITY = -10
"""Priority of the table's input hook: ahead of the usual filter chains (priority 0)."""
PACKETFILTER_ERROR_CHARS = 300
"""Characters of an `nft` error message kept in a log line."""
PACKETFILTER_EXPIRY_MARGIN = 2.0
"""Seconds an element still counts as in the kernel after its ban ended (element timeouts are
rounded up to whole seconds)."""

# --- directories (directory/) ------------------------------------------------------------------
STATIC_FILE_MAX_LINE = 4096
"""Longest line of the static directory file in characters."""
LDAP_PAGE_SIZE = 500
"""Entries per page of an LDAP snapshot search (RFC 2696 paged results)."""
CALLAHEAD_RATE_WINDOW = 60.0
"""Seconds of the window of callahead.probes_per_minute and source_probes_per_minute."""

# --- delivery (relay/) -------------------------------------------------------------------------
DOWNSTREAM_WRITE_BATCH = SPOOL_CHUNK
"""Message octets gathered into one write downstream (the spool's chunk size)."""
DOWNSTREAM_CLOSE_TIMEOUT = 5.0
"""Most seconds spent closing one downstream connection politely (QUIT) before dropping it."""
MAX_PASSED_LINES = 5
"""Lines of a downstream reply passed on to the client."""
SIZE_HEADER_ROOM = 1024
"""Octets kept free under the downstream's SIZE for the header lines mailmoat adds."""
MAILDIR_TMP_MAX_AGE = 36 * 3600.0
"""Seconds after which a file in a Maildir's tmp/ is a crash's leftover (the Maildir
convention)."""
MAILDIR_SWEEP_EVERY = 3600.0
"""Seconds between two looks for such leftovers."""

MIN_TIMEOUT = 1.0
"""Shortest session timeout in seconds `config check` accepts: below it no client on a real
network can answer (a timeouts.greeting of 1e-300 refuses every client)."""
LOG_VALUES_SHOWN = 4096
"""Log values remembered as the text format shows them (a refusal's reply text and reason
repeat from line to line); past it the memory is cleared."""
RELOAD_RETIRE_POLL = 1.0
"""Seconds between looks, after a reload, for the end of the last session that runs under the
old state (whose checks and delivery are closed then)."""
RELOAD_TIMEOUT = 30.0
"""Seconds a worker has to build its new state on a reload (a directory to load)."""

# --- the milter (milter/) ------------------------------------------------------------------------
MILTER_MAX_PACKET = 256 * KiB
"""Longest milter packet in octets: Postfix sends a header field of up to header_size_limit
(100 KiB by default) as one packet, and body chunks of 64 KiB; a longer one closes the
connection (a 64 KiB bound would break mail)."""
MILTER_READ_SIZE = 64 * KiB
"""Octets read from a milter connection at a time."""
MILTER_IDLE_TIMEOUT = 900.0
"""Seconds a milter connection may stay silent: the MTA is quiet while its client is slow
(Postfix's smtpd_timeout is 300 s a command), so this is longer than any command's wait."""
MILTER_MAX_CONNECTIONS = 2000
"""Milter connections open at once (the MTA opens one per SMTP session); past it a new one
is closed at once and the MTA applies its milter_default_action."""
MILTER_MAX_MACROS = 64
"""Macro names one milter connection may hold at once."""
MILTER_MAX_MACRO_OCTETS = 16 * KiB
"""Octets of macro values one milter connection may hold at once."""
MILTER_MAX_HEADERS = 2000
"""Header fields of one message seen through the milter: past it the message gets 552 at its
end (each field costs a little bookkeeping, so their number is bounded as their size is)."""
# --- Postfix policy service (postfix_policy) ----------------------------------------------------
POLICY_MAX_LINE = 4096
"""Longest `name=value` line of a policy request, in octets (Postfix's longest attribute, a
recipient or a certificate subject, is well under 1 KiB)."""
POLICY_MAX_ATTRIBUTES = 64
"""Attributes in one policy request (Postfix 3.7 sends about 30)."""
POLICY_MAX_REQUEST = 16 * KiB
"""Octets of one policy request, all its lines together."""
POLICY_READ_CHUNK = 16 * KiB
"""Octets read from a policy connection at a time."""
POLICY_READ_TIME = 10.0
"""Seconds a policy request may take to arrive once its first octet came (Postfix writes a
request at once; a peer that stops mid-request is closed)."""
POLICY_IDLE_TIME = 330.0
"""Seconds a policy connection may stay idle between requests: longer than Postfix's
smtpd_policy_service_max_idle (300 s), so Postfix closes first."""
POLICY_CONNECTIONS = 256
"""Policy connections served at once (one per busy Postfix smtpd process); more are closed."""
POLICY_SESSIONS = 20000
"""Postfix SMTP sessions the policy service remembers (its connect-stage verdict, its unknown
recipients), the oldest forgotten first."""
POLICY_SESSION_TIME = 600.0
"""Seconds a remembered Postfix SMTP session is kept: a request after that (or with
protocol_state CONNECT) runs the connect stage again."""
