//! Every bound Velocity enforces, in one place, each with the reason it exists.
//!
//! Network input is hostile until proven otherwise: nothing read off a socket may make the
//! server allocate, loop or wait without one of these limits standing in the way.

/// Bytes before the payload: magic (4), version (1), type (1), length (4).
pub const FRAME_HEADER_BYTES: usize = 10;
/// Bytes after the payload: the CRC-32.
pub const FRAME_TRAILER_BYTES: usize = 4;
/// Header plus trailer: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD_BYTES: usize = FRAME_HEADER_BYTES + FRAME_TRAILER_BYTES;

/// Largest payload accepted before authentication (profile §1). An anonymous peer has no
/// business sending more than a HELLO or an AUTH_REQUEST, both far below this.
pub const PREAUTH_PAYLOAD_BYTES_MAX: u32 = 4096;
/// Default `max_payload` after authentication (profile §1): large enough for big values,
/// small enough that one connection cannot pin much memory.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u32 = 1 << 20;
/// The ceiling an operator may raise `max_payload` to (profile §1).
pub const PAYLOAD_BYTES_MAX_CEILING: u32 = 64 << 20;
/// The floor for `max_payload`: every frame the server sends (SERVER_INFO, STATS) must fit.
pub const PAYLOAD_BYTES_MAX_FLOOR: u32 = 4096;

/// Longest key (profile §5): the key length must fit the u16 used by the store's entry header.
pub const KEY_BYTES_MAX: usize = 65_535;
/// Most keys in one `IN (…)` list (profile §5): bounds the fan-out of one statement.
pub const IN_LIST_KEYS_MAX: usize = 1024;
/// Most rows in one INSERT. The payload bound already limits this; a row count bound keeps
/// per-row bookkeeping (one plan entry per row) proportional to something small.
pub const INSERT_ROWS_MAX: usize = 100_000;
/// Most columns in a SELECT list (`key, value, ttl` and repeats): keeps the projection inline,
/// so that the point SELECT parses without allocating.
pub const SELECT_COLUMNS_MAX: usize = 8;
/// Longest LIKE pattern. Matching costs up to O(key × pattern) per key; this bound, with
/// KEY_BYTES_MAX, keeps a hostile pattern from turning one scan into minutes of CPU.
pub const LIKE_PATTERN_BYTES_MAX: usize = 1024;
/// Largest TTL in seconds (100 years): keeps `now + ttl` in milliseconds far from overflow.
pub const TTL_SECONDS_MAX: u64 = 100 * 365 * 24 * 3600;

/// Longest user name (profile §3).
pub const USERNAME_BYTES_MAX: usize = 64;
/// Longest password (profile §3).
pub const PASSWORD_BYTES_MAX: usize = 128;
/// Longest credential or API key on the wire (profile §3).
pub const CREDENTIAL_BYTES_MAX: usize = 128;
/// Longest PING payload (profile §3).
pub const PING_PAYLOAD_BYTES_MAX: usize = 64;
/// Failed logins allowed on one connection before DISCONNECT (profile §2).
pub const AUTH_TRIES_MAX: u32 = 3;

/// Time a peer has to send HELLO and finish logging in (profile §2): a slow or silent peer must
/// not hold a connection slot forever.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default idle timeout for authenticated connections; 0 turns it off (Redis's default too).
pub const IDLE_TIMEOUT_S_DEFAULT: u64 = 0;

/// Most request frames taken from one read buffer as one batch. Bounds the pending-reply ring
/// and the work done before the connection's replies are written.
pub const CONN_BATCH_REQUESTS_MAX: usize = 1024;
/// Bytes an idle connection waits with (in its task's state, not on the heap): enough for a
/// typical un-pipelined request, so that it costs one read; anything longer is read on into a
/// full CONN_READ_CHUNK_BYTES buffer.
pub const CONN_FIRST_READ_BYTES: usize = 256;
/// Reply bytes a connection gathers for one batch (encoded, or held for encoding) before it
/// stops taking requests from its input and writes them; a shard answering a batch's
/// forwarded requests stops at this much too (Core::run_ops). With one reply of up to
/// max_payload beyond it, this bounds what a client that never reads can make the server hold.
pub const CONN_OUT_BYTES_MAX: usize = 256 << 10;
/// Read size per socket read: enough for about 200 pipelined point requests per wake-up, small
/// enough that zeroing it per read costs little without pipelining. A connection's input is at
/// most one partial frame (≤ `max_payload` + 14) plus one such read.
pub const CONN_READ_CHUNK_BYTES: usize = 16 << 10;

/// Entries a long read (range SELECT, LIKE, COUNT over a range) looks at in one slice, and rows
/// a long write (range DELETE, an INSERT of many rows) changes in one: about 30–100 µs each on
/// this machine (a write, with its log record and before-image, costs ~1 µs a key). Between
/// slices the core polls its sockets and runs its other connections' requests, so another
/// client waits about one slice, not the whole statement.
pub const SLICE_ENTRIES: usize = 1024;
pub const SLICE_WRITES: usize = 64;
/// Statements at least this long (but the canonical point read and one-row INSERT, which need
/// no parse) are parsed and planned on the blocking thread pool rather than on the core: at
/// ~20 ns a byte, a 1 MB INSERT takes 20–30 ms to parse, which would stall the core's other
/// connections; 64 KiB takes about 1 ms.
pub const STATEMENT_OFF_CORE_BYTES: usize = 64 << 10;
/// Polling rounds without a message before the crossbeam poller starts sleeping.
pub const CROSSBEAM_SPIN_ROUNDS: u32 = 2000;
/// The crossbeam poller's first sleep when idle; it doubles up to 1 ms. This is the latency it
/// adds to the first request after a lull.
pub const CROSSBEAM_IDLE_SLEEP_US: u64 = 50;
/// Ciphertext read per socket read: one maximal TLS record plus its header.
pub const TLS_READ_BYTES: usize = 16 * 1024 + 256;
/// Plaintext handed to rustls per write, so its send queue never holds more than this.
pub const TLS_WRITE_CHUNK_BYTES: usize = 64 * 1024;
/// Snapshot bytes written per write call: the encoder's output is handed to the file in pieces
/// of this size, so a snapshot never holds more than this (plus one chunk) in memory.
pub const SNAPSHOT_WRITE_BYTES: usize = 256 << 10;
/// Depth of each cross-shard queue, in batches (one batch holds all of one connection's
/// requests for that shard from one read buffer). Seastar uses 128.
pub const SHARD_QUEUE_BATCHES_MAX: usize = 128;

/// Keys that allkeys-lru compares for each eviction. Redis's documentation finds 10 samples
/// close to true LRU (its default, 5, trades accuracy for speed); sampling needs no list kept in
/// access order, so a read only stamps its entry.
pub const EVICTION_SAMPLES: usize = 10;
/// Buckets probed from a random start for one sample: enough for a table at a quarter of its
/// capacity to yield a key almost always, few enough that a sparse one costs little (and a
/// table too sparse for them falls back to its first key).
pub const EVICTION_SAMPLE_PROBES: usize = 32;
/// Keys one write may evict to make room. A value that needs more (a large value over many
/// small keys) is refused once this many have gone, so that no write holds its core for longer
/// than 1.5 ms or so (about 1.5 µs an eviction, docs/benchmarks.md); the evictions made stay,
/// and a retry goes on from there.
pub const EVICTIONS_PER_WRITE_MAX: usize = 1024;
/// How often a core logs what it evicted since its last line, when it evicted anything.
pub const EVICTION_REPORT_INTERVAL_MS: u64 = 10_000;

/// Keys the active-expiry step may remove per tick, so that a mass expiry never stalls a core.
pub const EXPIRY_STEP_KEYS_MAX: usize = 200;
/// How often each shard runs its active-expiry step.
pub const EXPIRY_TICK_MS: u64 = 100;

/// glommio's preemption timer. Its default (100 ms) lets one busy task delay every other
/// connection on the core by that much; 500 µs keeps the tail near the sub-millisecond target.
pub const PREEMPT_TIMER_US: u64 = 500;
/// Longest start-up waits for a killed process (the data directory's previous owner, or one
/// still holding the listen address) to finish exiting: the kernel closes a process's sockets
/// only after freeing its memory, which takes seconds for a large heap. Past this, it refuses.
pub const OWNER_EXIT_WAIT_MS: u64 = 30_000;
/// How often start-up looks again at a listening socket that no process holds any more (a
/// killed process's, which the kernel closes a few milliseconds after the process is gone, once
/// its io_uring's pending accept is cancelled): there is nothing to wait on but the socket table.
pub const ORPHANED_SOCKET_POLL_MS: u64 = 5;
/// Times start-up binds again when the address was in use but the socket table then shows
/// nothing on it (the socket closed between the refused bind and the look; on a loaded machine
/// that gap is wide): 40 x ORPHANED_SOCKET_POLL_MS, 0.2 s, before it refuses.
pub const ADDR_UNSEEN_RETRIES: u32 = 40;
/// Listen backlog of each core's socket (the kernel caps it at net.core.somaxconn).
pub const TCP_BACKLOG: i32 = 1024;
/// How often an executor checks for a shutdown request from the signal thread.
pub const SHUTDOWN_POLL_MS: u64 = 50;
/// Longest a graceful shutdown waits for in-flight requests before exiting anyway.
pub const SHUTDOWN_DRAIN_MS: u64 = 5_000;
/// How often a draining core looks whether its connections (and the other cores) are done.
pub const SHUTDOWN_DRAIN_POLL_MS: u64 = 5;
/// Pause after a failed accept (out of descriptors, say) before the next: no busy loop.
pub const ACCEPT_RETRY_MS: u64 = 10;

/// Default `--slowlog-threshold-us`: statements whose latency reaches 10 ms go into the slow log,
/// Redis's `slowlog-log-slower-than` default. Typical statements take 10–100 µs here, so this
/// logs what is a hundred times slower than usual, and is rare enough that the log is not
/// flooded. 0 logs every statement.
pub const SLOWLOG_THRESHOLD_US_DEFAULT: u64 = 10_000;
/// Entries each core's slow log keeps (Redis's `slowlog-max-len` default); older ones are
/// dropped. An entry is at most about 1.3 KB (a 64-byte user, a target of at most 8 keys of 128
/// bytes), so a core's ring stays under 170 KB, and SHOW SLOWLOG merges at most this many per core.
pub const SLOWLOG_ENTRIES_PER_CORE: usize = 128;
/// Canonical point reads and one-row writes of a batch (the fast paths, whose latency is the
/// batch's, one clock read a batch) that the slow log takes from one slow batch at most: a slow
/// pipeline of 1,024 of them would otherwise fill the ring with one batch and push out the
/// statement that made it slow.
pub const SLOWLOG_BATCH_FAST_MAX: usize = 16;

/// Bytes of audit records a core gathers before handing them to its writer thread, which
/// writes them as one checksummed block (a record is about 30 bytes and a key).
pub const AUDIT_BUFFER_BYTES: usize = 64 << 10;
/// Bytes of a key an audit record (and the slow log) keeps: enough to tell keys apart, and a
/// megabyte key does not make a megabyte record.
pub const TARGET_KEY_BYTES_MAX: usize = 128;
/// Buffers queued per shard for its writer (4 MiB); past this, lines are dropped and counted
/// rather than making requests wait on the disk.
pub const AUDIT_QUEUE_BUFFERS: usize = 64;
/// How often the audit writer flushes when lines stop arriving.
pub const AUDIT_FLUSH_MS: u64 = 100;
/// Default size at which an audit file is rotated, and how many old files are kept.
pub const AUDIT_FILE_BYTES_MAX_DEFAULT: u64 = 64 << 20;
pub const AUDIT_FILES_KEPT: usize = 4;

/// Failed logins of one user (or one API key) from one address (per core) before that pair's
/// attempts are refused unchecked. Counted per pair, so that one user's typo storm behind a NAT
/// or an app server does not lock out the other users there.
pub const LOGIN_FAIL_THRESHOLD_DEFAULT: u32 = 5;
/// Failed logins from one address, all users together (per core), before every login from it
/// is refused unchecked: password spraying tries many users a few times each and never trips the
/// per-pair threshold. Ten times that threshold: ten users' worth of typo storms at once.
pub const LOGIN_ADDR_FAIL_THRESHOLD_DEFAULT: u32 = 50;
/// The per-address count leaks away, draining from the threshold to 0 in this long without
/// failures (50 per 5 min = one every 6 s). An address failing slower than that, in bursts
/// below the threshold — a NAT whose users mistype now and then — is never throttled; a sprayer
/// at 10,000 tries a second reaches 50 in 5 ms, and afterwards gets about this rate at most.
pub const LOGIN_ADDR_FAIL_DRAIN_MS: u64 = 300_000;
/// Addresses, and (address, user) pairs, each core remembers failed logins for: bound the
/// throttle's memory under a flood from many addresses or user names. Each map is two
/// generations of 28,672 entries (7/8 of 2^15, hashbrown's load factor, so a generation's table
/// stops at 2^15 buckets instead of doubling for its last entries): 57 or 65 bytes a bucket,
/// 7.6 MiB a core for both maps at the bound, less than the one 65,536-address map before (8.1).
/// Past it the quietest generation is forgotten, which gives its entries a fresh count: to use
/// that, an attacker needs ~29,000 new failing pairs or addresses between two of its tries.
pub const LOGIN_THROTTLE_ADDRESSES_MAX: usize = 57_344;
pub const LOGIN_THROTTLE_PAIRS_MAX: usize = 57_344;
/// Failed logins are logged as one summary per address per interval, never one line per
/// attempt: 10,000 failures a second would otherwise flood the log.
pub const LOGIN_REPORT_INTERVAL_MS: u64 = 10_000;
/// Addresses summarised one by one per interval (per core); the rest are summed into one more
/// line. Bounds the log to ~6.5 lines a second per core whatever the number of addresses.
pub const LOGIN_REPORT_ADDRESSES_MAX: usize = 64;
/// User names shown as examples in a summary; the number of distinct users is always given.
pub const LOGIN_REPORT_EXAMPLES: usize = 3;
/// How often each core looks for changes to the users and API-key files.
pub const AUTH_RELOAD_CHECK_MS: u64 = 1_000;

/// Argon2id defaults the server advertises (profile §3; OWASP's recommended minimum).
pub const ARGON2_M_KIB_DEFAULT: u32 = 19_456;
pub const ARGON2_T_DEFAULT: u32 = 2;
pub const ARGON2_P_DEFAULT: u8 = 1;
/// Bounds a client accepts for Argon2id parameters from SERVER_INFO: a hostile server must not
/// be able to make a client allocate gigabytes or spin for minutes.
pub const ARGON2_M_KIB_MAX: u32 = 1 << 20;
pub const ARGON2_T_MAX: u32 = 16;
pub const ARGON2_P_MAX: u8 = 16;

/// Connections waiting to log in (not yet authenticated), server-wide, from one source address
/// and in all; each core enforces its share. A handshake takes a round trip or two and a login
/// one SHA-256, so a legitimate client holds a slot for milliseconds; a peer trickling its
/// handshake holds one until the handshake timeout. Generous enough for an application server
/// opening a pool of a hundred connections at once; the total is also held to half of
/// --max-connections, so logged-in users always have room, and one address's share to half of
/// the total, so other addresses can always log in.
pub const UNAUTHENTICATED_PER_ADDRESS_MAX_DEFAULT: usize = 128;
pub const UNAUTHENTICATED_MAX_DEFAULT: usize = 4096;
/// The half-of-max-connections rule never leaves fewer login slots than this: with a tiny
/// --max-connections, that limit bounds them already.
pub const UNAUTHENTICATED_MIN: usize = 64;
/// Default longest a logged-in client may take to send one frame, from its first byte: a deadline
/// per frame, so that trickling a byte at a time cannot hold a connection's buffers for ever.
/// 10 s carries a default-sized (1 MiB) frame at 100 KiB/s.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Refused connections a core tells why at once (each may take a TLS handshake); past this, under
/// a flood of connections, refused ones are closed without a word.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// Connections reserved for things other than clients (listeners, data files, logs) when the
/// default `--max-connections` is derived from the open-files limit.
pub const FD_RESERVE: u64 = 64;

/// The metrics endpoint (`--metrics-listen`): one request per connection, its head at most this
/// long (a scrape's is ~250 bytes; a longer one is refused with 431, unread past this).
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 << 10;
/// Time a metrics client has to send its request, from connecting: a silent or trickling peer
/// holds one of the few slots below for no longer.
pub const METRICS_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Time to collect every core's figures and write the reply (Prometheus's default scrape timeout
/// is 10 s): a client that stops reading is dropped then.
pub const METRICS_RESPONSE_TIMEOUT_MS: u64 = 10_000;
/// Metrics connections served at once; more are closed unanswered. A scraper needs one; this
/// bounds what a flood of them costs core 0 (each holds at most the request and one reply).
pub const METRICS_CONNECTIONS_MAX: usize = 8;

/// A logged-in plaintext connection idle this long is parked: its task and socket state are
/// freed and it waits as session state plus a descriptor in the core's epoll set (park.rs).
/// Long enough that a client pausing between bursts is never parked; short enough that a pool
/// of idle connections costs little within seconds.
pub const CONN_PARK_AFTER_IDLE_MS: u64 = 2_000;
/// How often a core polls its parked connections (a non-blocking epoll_wait): the extra delay
/// of the first request after a long idle.
pub const CONN_PARK_POLL_MS: u64 = 2;
/// Parked connections resumed per poll at most; the rest wait for the next poll.
pub const PARKED_EVENTS_PER_POLL: usize = 256;
/// Parked connections between two returns of freed memory to the OS (malloc_trim).
pub const PARK_TRIM_EVERY: usize = 256;

// ---- Durability ----

/// Bytes of log records one group commit writes at most before its fdatasync. Caps how much a
/// crash can tear and how long one sync keeps its writers waiting;
/// at ~50 bytes a SET, 1 MiB is 20,000 writes per sync, far above what arrives during one.
pub const WAL_GROUP_BYTES_MAX: usize = 1 << 20;
/// Largest record body the reader accepts: one statement at the largest --max-payload, with
/// room for its per-row framing and sealing. A longer length field is damage.
pub const WAL_RECORD_BYTES_MAX: usize = 2 * (PAYLOAD_BYTES_MAX_CEILING as usize) + 4096;
/// Buckets (a power of two) of a shard's table of keys written but not yet durable (sync mode):
/// a point read waits only for the group of a write to a key of its bucket, not for every write
/// in flight on the shard. 64Ki buckets (512 KiB a shard): a read under a write flood rarely
/// shares a bucket with a key being written.
pub const DIRTY_BUCKETS: usize = 1 << 16;
/// Default log size that triggers a snapshot: the log is then truncated behind it, so disk use
/// stays near (snapshot + this). A snapshot is also taken when the log outgrows the last one.
pub const SNAPSHOT_LOG_BYTES_DEFAULT: u64 = 64 << 20;
/// Entries a snapshot copies between yields: bounds the pause a snapshot puts in front of
/// requests on its core (~100 µs at ~100 ns an entry).
pub const SNAPSHOT_CHUNK_ENTRIES: usize = 1024;
/// How often each core checks whether its log calls for a snapshot.
pub const SNAPSHOT_CHECK_MS: u64 = 500;
/// Default interval of `--durability periodic`.
pub const FSYNC_INTERVAL_MS_DEFAULT: u64 = 1_000;

/// Times `velocityd backup` lists a shard's files again when one vanished before it could be
/// opened (a snapshot finished in between and removed what it replaces). Snapshots are seconds
/// apart at the least, so a second try nearly always succeeds; the bound only stops a backup
/// from spinning against a server that snapshots without pause.
pub const BACKUP_LIST_RETRIES: u32 = 100;

// ---- Cluster (replicated ranges on Raft) ----

/// Ranges of the token space a cluster may be created with: each is a Raft group with a
/// replica on RF nodes, so this bounds the groups a node drives (16 per node, the default, for
/// up to 64 nodes) and the per-range state every node keeps in its range map.
pub const CLUSTER_RANGES_MAX: u32 = 1024;
/// Replicas per range at most: a write waits for a majority, so more copies cost every write
/// a wider fan-out for little more safety (Raft deployments use 3 or 5).
pub const CLUSTER_REPLICATION_MAX: usize = 7;
/// Nodes a cluster may name: the node id is a u64, but every node keeps a connection and a
/// send queue per peer.
pub const CLUSTER_NODES_MAX: usize = 64;
/// Bytes of a cluster file at most: 64 nodes' lines are a few KiB; anything longer is not one.
pub const CLUSTER_FILE_BYTES_MAX: usize = 64 << 10;
/// Bytes of Raft messages queued for one peer core while its link is down or slow: past this
/// the newest are dropped, which Raft tolerates (it sends again), instead of holding a dead
/// peer's share of memory without bound.
pub const PEER_QUEUE_BYTES_MAX: usize = 2 * RAFT_MESSAGE_BYTES_MAX;
/// Between attempts to reach a peer core that refused or dropped a link: short against an
/// election timeout (a restarted peer is heard from again within a tick or two), long enough not
/// to spin on one that is down.
pub const PEER_RECONNECT_MS: u64 = 200;
/// Node-to-node connections one core holds open at once: one in from each other node's core
/// and a few `cluster status` calls; anything beyond is refused at accept.
pub const PEER_CONNECTIONS_MAX: usize = 4 * CLUSTER_NODES_MAX;
/// How long a cluster node's request waits for Raft: a write for its commit (on this node or
/// at the leader it was forwarded to), a read for its read-index confirmation and the apply
/// that catches up to it. A few election timeouts: a failover in between is waited out, a
/// leader cut off from its majority is not. Then a write's outcome is unknown (OUTCOME_UNKNOWN)
/// and a read is refused (retry).
pub const CLUSTER_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Writes one core has forwarded to other nodes' leaders and not heard back of: past this,
/// more are refused (retry) rather than waiting in memory without bound.
pub const CLUSTER_FORWARDS_IN_FLIGHT_MAX: usize = 4096;
/// How long a cluster node that is asked to stop (SIGTERM) waits for the leadership of its
/// ranges to move to caught-up replicas before it stops anyway: a hand-over takes a round trip
/// or two; past an election timeout and a half the peers would have elected without it.
pub const LEADER_HANDOVER_MS: u64 = 3_000;
/// How long `velocityd cluster init` waits for each peer core when it asks whether the cluster
/// already knows this node's log: a peer not up yet (bootstrap) refuses at once on a working
/// network, and init must not hang minutes on one that is unreachable.
pub const CLUSTER_INIT_PROBE_MS: u64 = 2_000;
/// Bytes of ops a range's leader gathers into one entry before it proposes them (it proposes
/// each cycle anyway): far below a log record's bound, and small enough that one entry's
/// apply is a short pause for the core.
pub const CLUSTER_BATCH_BYTES_MAX: usize = 256 << 10;
/// Bytes of one Raft message between nodes at most (its range and the protobuf-encoded
/// message): an append carries at most RAFT_APPEND_BYTES_MAX of entries, so anything longer
/// from a peer is damage or an attack. A snapshot's rows travel apart, in pieces of
/// SNAPSHOT_PIECE_BYTES.
pub const RAFT_MESSAGE_BYTES_MAX: usize = 2 * RAFT_APPEND_BYTES_MAX + (64 << 10);
/// Bytes of log entries one append message carries: a follower that is behind catches up in
/// pieces this big, rather than in one message as long as its gap.
pub const RAFT_APPEND_BYTES_MAX: usize = 4 << 20;
/// Appends in flight to one follower before the leader waits for acknowledgements: with
/// RAFT_APPEND_BYTES_MAX each, bounds the bytes a slow follower makes the leader hold.
pub const RAFT_INFLIGHT_APPENDS_MAX: usize = 64;
/// Bytes of proposals a range's leader holds not yet committed: past this it refuses new ones
/// (the client sees the write refused, as for a full queue) rather than grow its log without
/// bound while a majority is out of reach.
pub const RAFT_UNCOMMITTED_BYTES_MAX: u64 = 64 << 20;
/// Raft's clock: one tick, the heartbeat every RAFT_HEARTBEAT_TICKS, an election after
/// RAFT_ELECTION_TICKS without a leader (randomised up to twice that, as Raft prescribes). At
/// 100 ms a tick, a dead leader is replaced within 1–2 s of its last heartbeat.
pub const RAFT_TICK_MS: u64 = 100;
pub const RAFT_HEARTBEAT_TICKS: usize = 1;
pub const RAFT_ELECTION_TICKS: usize = 10;
/// Ticks a read-index request may go unanswered before it is asked again: a link drops messages
/// while it is down or full, and raft-rs sends its own again but not a read-index request (one
/// is asked again at once, too, when its range's leader or term changes: raft-rs drops those
/// pending then). An election timeout: long against a heartbeat round.
pub const READ_INDEX_RETRY_TICKS: u64 = RAFT_ELECTION_TICKS as u64;
/// Bytes of a snapshot's rows in one frame to a follower: small against the link's queue, so
/// that heartbeats and appends to the same core go between the pieces.
pub const SNAPSHOT_PIECE_BYTES: usize = 1 << 20;
/// Bytes of a range's rows one snapshot from a peer may hold: the follower gathers the pieces
/// in memory before it installs them (a range's rows fit in a host's memory, or the leader
/// could not hold them), and a stream that claims more is refused before its bytes come.
pub const RAFT_SNAPSHOT_BYTES_MAX: u64 = 16 << 30;

/// How close to the leader's commit index a learner's log must be before a membership change
/// makes it a voter: promoted while far behind, it would hold back every commit that needs it
/// for a majority until it caught up (with a node down, all of them).
pub const LEARNER_CAUGHT_UP_ENTRIES: u64 = 64;

/// Bytes of rows a node returns for a read another node had it serve (a range it holds no
/// replica of): the answer travels in one node-to-node frame, which must stay well under
/// RAFT_MESSAGE_BYTES_MAX. A larger part of a result is refused as too large, as a result over
/// the client's max_payload is.
pub const FORWARDED_READ_BYTES_MAX: usize = 4 << 20;

/// Ticks between a core's probes for the replicas it holds of ranges the membership placed
/// elsewhere (RAFT_TICK_MS each: once a second): a removed replica learns it was removed
/// within about this, without a probe per tick for every such range.
pub const REPLICA_PROBE_TICKS: u64 = 10;

/// How long a node waits for the answer to a range DELETE another node runs for it (of ranges
/// it holds no replica of) before it reports the outcome unknown (a read waits
/// CLUSTER_REQUEST_TIMEOUT_MS). The serving node always answers, on the connection the request
/// came on, and that connection's loss fails the request at once: this bounds only a serving
/// node that stalls, long enough that a long DELETE finishes.
pub const FORWARDED_REQUEST_TIMEOUT_MS: u64 = 60_000;

/// Answers to a peer connection's requests queued beyond PEER_QUEUE_BYTES_MAX: an answer of
/// at most this many bytes (an outcome without rows, "gone") is queued anyway, so a peer that
/// reads its answers slowly still hears each request's fate; their number is bounded by the
/// requests a peer may have in flight (CLUSTER_FORWARDS_IN_FLIGHT_MAX per core). A longer
/// answer that does not fit is told as an unknown outcome instead.
pub const PEER_ANSWER_SMALL_BYTES: usize = 1024;
