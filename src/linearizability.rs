//! A linearizability checker for histories of key-value operations, sans I/O: it is handed a
//! recorded history and returns a verdict; it reads no file, opens no socket, starts no thread.
//!
//! A chaos test records, for every client operation against a cluster, when it was called, when
//! it returned and what it returned ([`Operation`]); [`check`] then decides whether some single
//! order of all those operations, each placed at one instant between its call and its return,
//! explains every output under the sequential model (each key a register, absent at first).
//!
//! # The model, per key (P-compositionality)
//!
//! Every key is an independent register: a `Put` sets it, a `Delete` makes it absent, a `Get`
//! reads it. Linearizability is compositional (Herlihy & Wing): a history is linearizable iff
//! each object's sub-history is. So the history is split by key and each key is checked on its
//! own, which turns one search exponential in the whole history into many small ones.
//!
//! # The search
//!
//! Wing & Gong's algorithm with Lowe's memoization, as in Knossos and Porcupine: the key's call
//! and return events are laid out in time order in a doubly linked list; a depth-first search
//! repeatedly picks a pending call before the first return still in the list, applies it to the
//! model and "lifts" it (with its return) out of the list; reaching a return whose operation has
//! not been linearized means the last choice was wrong, so it backtracks and "unlifts". A cache
//! of (set of linearized operations, register value) already explored prunes the search: two
//! paths that linearized the same operations and left the same value have the same futures.
//!
//! The search is exponential in the worst case (many mutually concurrent operations), so it is
//! bounded: each key gets a budget of search steps and the key's verdict is
//! [`Verdict::Undecided`] once it is spent, so a pathological history cannot hang a CI script.
//! Memory is bounded by the budget too: each step adds at most one cache entry of about
//! `ops_on_key / 8` bytes.
//!
//! # Unknown outcomes
//!
//! A write whose client never learned the outcome (a timeout, a lost connection, the server's
//! "outcome unknown" error) is recorded with `return_ns: None` and [`Output::Unknown`]. It may
//! have taken effect at any instant after its call — even after the client gave up, since the
//! request may still have been in flight — or never. It is therefore given a return time of
//! +∞: it has no return event, so the search may linearize it at any point after its call, and
//! the search succeeds as soon as every operation *with* a return time is linearized; unknown
//! writes still pending then are the ones that never took effect (applying them at the end
//! would change nothing observable anyway).
//!
//! Unknown writes that are seen cost search time: each may be placed anywhere after its call.
//! Unknown writes of a value that no read returned are left out up front, which is sound (a read
//! placed right after one would have to return its value, so another write always separates it
//! from the next read, and removing it changes nothing) and keeps timeouts from blowing up the
//! search.
//!
//! A read with an unknown outcome says nothing about the register and is dropped before the
//! search (counted in [`Report::unknown_reads_dropped`]).
//!
//! An operation that failed with a definite "not applied" error (a rejected statement, a
//! "not leader, nothing done" refusal) must simply be left out of the history by the caller: it
//! did not happen. Recording it as `Ok` would claim an effect; recording it as `Unknown` would be
//! correct but weaker (the checker would have to consider it).
//!
//! # Equal timestamps
//!
//! Operation A precedes operation B in real time only if `A.return_ns < B.call_ns`, strictly.
//! An operation that returned at `t` and one called at `t` are concurrent: within a tie, call
//! events are ordered before return events. That is the conservative reading for clocks of
//! finite resolution: the checker never rejects a history because two events fell into the same
//! clock tick. Use one monotonic clock for all clients (e.g. one process's `Instant`), or the
//! real-time order the checker relies on is meaningless.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// A key, as the client sent it.
pub type Key = Vec<u8>;
/// A value, as the client sent or received it.
pub type Value = Vec<u8>;

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Set `key` to `value`.
    Put { key: Key, value: Value },
    /// Read `key`.
    Get { key: Key },
    /// Make `key` absent (a no-op on an absent key).
    Delete { key: Key },
}

impl Input {
    /// The key the operation acts on.
    pub fn key(&self) -> &[u8] {
        match self {
            Input::Put { key, .. } | Input::Get { key } | Input::Delete { key } => key,
        }
    }
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A `Put` or `Delete` was applied.
    Ok,
    /// A `Get` read this value; `None`: the key was absent.
    Value(Option<Value>),
    /// The client never learned the outcome (timeout, lost connection, "outcome unknown").
    /// Requires `return_ns: None`.
    Unknown,
}

/// One client operation as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Who issued it; for diagnostics only (real-time order comes from the timestamps).
    pub client: u64,
    /// When the client sent it, on a clock shared by every client.
    pub call_ns: u64,
    /// When the client received the answer; `None` exactly when the output is
    /// [`Output::Unknown`] (the operation may take effect at any time after its call, or never).
    pub return_ns: Option<u64>,
    pub input: Input,
    pub output: Output,
}

/// The outcome of a check, for one key or for the whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization explains every output.
    Linearizable,
    /// No linearization exists for this key's operations.
    Violation {
        key: Key,
        /// Where the search got deepest before failing: the last operations it could place, the
        /// register's value then, and the operation that could not be placed before its return.
        detail: String,
    },
    /// The search budget ran out before a linearization was found or ruled out.
    Undecided { key: Key },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::Violation { key, detail } => {
                write!(f, "NOT linearizable on key {}: {detail}", show(key))
            }
            Verdict::Undecided { key } => {
                write!(f, "undecided on key {}: search budget exhausted", show(key))
            }
        }
    }
}

/// One key's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    pub key: Key,
    /// Operations checked on this key (unknown-outcome reads excluded).
    pub ops: usize,
    /// Search steps spent; at most the budget.
    pub steps: u64,
    pub verdict: Verdict,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The first violation in key order if any key has one, else the first undecided key if
    /// any, else [`Verdict::Linearizable`]. A violation outranks an undecided key: it is a
    /// definite answer for the whole history.
    pub verdict: Verdict,
    /// Every key of the history, in byte order.
    pub keys: Vec<KeyReport>,
    /// Operations that took part in the check (the history minus unknown-outcome reads).
    pub ops_checked: usize,
    /// Reads with an unknown outcome, dropped because they carry no information.
    pub unknown_reads_dropped: usize,
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        self.verdict.is_linearizable()
    }
}

/// A history that cannot be checked because an operation contradicts itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// `return_ns < call_ns`: the clock went backwards or the record is corrupt.
    ReturnBeforeCall { index: usize, call_ns: u64, return_ns: u64 },
    /// The output does not fit the input, or the return time does not fit the output.
    Malformed { index: usize, reason: &'static str },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::ReturnBeforeCall { index, call_ns, return_ns } => {
                write!(f, "operation #{index} returned at {return_ns} ns, before its call at {call_ns} ns")
            }
            HistoryError::Malformed { index, reason } => write!(f, "operation #{index}: {reason}"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// Checks `history` for linearizability, key by key, spending at most `budget_steps_per_key`
/// search steps on each key. Operations may come in any order; indices in diagnostics are
/// positions in `history`.
///
/// A well-behaved key costs about one step per operation, so a budget of a few million is
/// ample for chaos-test histories and still returns within seconds when it is spent.
pub fn check(history: &[Operation], budget_steps_per_key: u64) -> Result<Report, HistoryError> {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    let mut unknown_reads_dropped = 0;
    for (index, op) in history.iter().enumerate() {
        validate(index, op)?;
        if matches!(op.input, Input::Get { .. }) && op.output == Output::Unknown {
            unknown_reads_dropped += 1;
            continue;
        }
        by_key.entry(op.input.key()).or_default().push(index);
    }

    let keys: Vec<KeyReport> = by_key
        .into_iter()
        .map(|(key, indices)| {
            let (steps, verdict) = check_key(history, key, &indices, budget_steps_per_key);
            KeyReport { key: key.to_vec(), ops: indices.len(), steps, verdict }
        })
        .collect();
    let first = |wanted: fn(&Verdict) -> bool| keys.iter().map(|k| &k.verdict).find(|v| wanted(v)).cloned();
    let verdict = first(|v| matches!(v, Verdict::Violation { .. }))
        .or_else(|| first(|v| matches!(v, Verdict::Undecided { .. })))
        .unwrap_or(Verdict::Linearizable);
    Ok(Report { verdict, keys, ops_checked: history.len() - unknown_reads_dropped, unknown_reads_dropped })
}

fn validate(index: usize, op: &Operation) -> Result<(), HistoryError> {
    let malformed = |reason| Err(HistoryError::Malformed { index, reason });
    match (op.return_ns, &op.output) {
        (Some(return_ns), _) if return_ns < op.call_ns => {
            return Err(HistoryError::ReturnBeforeCall { index, call_ns: op.call_ns, return_ns });
        }
        (Some(_), Output::Unknown) => {
            return malformed(
                "an unknown outcome has no return time (return_ns must be None): \
                 the operation may take effect after the client gave up",
            );
        }
        (None, Output::Ok | Output::Value(_)) => {
            return malformed("a known output needs a return time (return_ns must be Some)")
        }
        _ => {}
    }
    match (&op.input, &op.output) {
        (Input::Get { .. }, Output::Ok) => malformed("a Get's output must be Value or Unknown"),
        (Input::Put { .. } | Input::Delete { .. }, Output::Value(_)) => {
            malformed("a Put's or Delete's output must be Ok or Unknown")
        }
        _ => Ok(()),
    }
}

/// A register value, interned per key so that model states are cheap to compare and cache.
type ValueId = u32;
const ABSENT: ValueId = 0;

/// What an operation does to the register, with its recorded output folded in.
#[derive(Clone, Copy, Debug)]
enum Effect {
    Write(ValueId),
    /// Legal only when the register holds this value.
    Read(ValueId),
}

impl Effect {
    /// The register after the operation, or `None` if the operation's output rules it out here.
    fn apply(self, register: ValueId) -> Option<ValueId> {
        match self {
            Effect::Write(v) => Some(v),
            Effect::Read(v) => (v == register).then_some(register),
        }
    }
}

struct KeyOp {
    /// Position in the caller's history, for diagnostics.
    index: usize,
    call_ns: u64,
    /// `None`: +∞ (unknown outcome).
    return_ns: Option<u64>,
    effect: Effect,
}

fn check_key<'h>(
    history: &'h [Operation],
    key: &[u8],
    indices: &[usize],
    budget_steps: u64,
) -> (u64, Verdict) {
    // Id 0 is the absent register; a value read but never written gets an id too and simply
    // never matches the register.
    let mut values: Vec<&'h [u8]> = vec![&[]];
    let mut ids: HashMap<&'h [u8], ValueId> = HashMap::new();
    let mut intern = |v: &'h [u8]| -> ValueId {
        *ids.entry(v).or_insert_with(|| {
            values.push(v);
            ValueId::try_from(values.len() - 1).expect("fewer than 2^32 values per key")
        })
    };
    let ops: Vec<KeyOp> = indices
        .iter()
        .map(|&index| {
            let op = &history[index];
            let effect = match (&op.input, &op.output) {
                (Input::Put { value, .. }, _) => Effect::Write(intern(value)),
                (Input::Delete { .. }, _) => Effect::Write(ABSENT),
                (Input::Get { .. }, Output::Value(Some(v))) => Effect::Read(intern(v)),
                (Input::Get { .. }, _) => Effect::Read(ABSENT),
            };
            KeyOp { index, call_ns: op.call_ns, return_ns: op.return_ns, effect }
        })
        .collect();
    // An unknown-outcome write of a value no read returned can always be left out: a read
    // linearized right after it would have to return that value, so in any linearization another
    // write comes between it and the next read, and removing it changes no read. Dropping it up
    // front spares the search from trying it at every point, which is where unknown outcomes
    // would otherwise make it blow up.
    let read_ids: HashSet<ValueId> = ops
        .iter()
        .filter_map(|op| match op.effect {
            Effect::Read(v) => Some(v),
            Effect::Write(_) => None,
        })
        .collect();
    let ops: Vec<KeyOp> = ops
        .into_iter()
        .filter(|op| match op.effect {
            Effect::Write(v) => op.return_ns.is_some() || read_ids.contains(&v),
            Effect::Read(_) => true,
        })
        .collect();

    let (steps, outcome) = search(&ops, budget_steps);
    let verdict = match outcome {
        Outcome::Linearizable => Verdict::Linearizable,
        Outcome::Undecided => Verdict::Undecided { key: key.to_vec() },
        Outcome::Violation(deepest) => {
            Verdict::Violation { key: key.to_vec(), detail: explain(history, &ops, &values, &deepest) }
        }
    };
    (steps, verdict)
}

enum Outcome {
    Linearizable,
    Violation(Deepest),
    Undecided,
}

/// The deepest dead end of a failed search: the most telling place to look at.
#[derive(Default)]
struct Deepest {
    /// Operations linearized there.
    depth: usize,
    /// The most recently linearized ones, oldest first (positions in the key's ops).
    recent: Vec<usize>,
    register: ValueId,
    /// The operation whose return was reached without it being linearized.
    blocked: usize,
    /// Some of the operations that were candidates there.
    pending: Vec<usize>,
}

const DIAGNOSTIC_OPS_MAX: usize = 5;
const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// The event list, doubly linked so that an operation's events can be taken out and put back in
/// O(1) while the search backtracks (dancing links).
struct Events {
    prev: Vec<usize>,
    next: Vec<usize>,
    /// The key's operation each node belongs to (meaningless for the head).
    op: Vec<usize>,
    is_call: Vec<bool>,
}

impl Events {
    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Exact inverse of `unlink` as long as removals are undone in reverse order.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize, ret: usize) {
        self.unlink(call);
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize, ret: usize) {
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

fn search(ops: &[KeyOp], budget_steps: u64) -> (u64, Outcome) {
    // Within a tie, calls (false) sort before returns (true): equal times are concurrent.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call_ns, false, i));
        if let Some(return_ns) = op.return_ns {
            order.push((return_ns, true, i));
        }
    }
    order.sort_unstable();

    let nodes = order.len() + 1;
    let mut events = Events {
        prev: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
        next: (1..=nodes).map(|n| if n == nodes { NIL } else { n }).collect(),
        op: vec![0; nodes],
        is_call: vec![false; nodes],
    };
    let mut return_node = vec![NIL; ops.len()];
    for (k, &(_, is_return, i)) in order.iter().enumerate() {
        let node = k + 1;
        events.op[node] = i;
        events.is_call[node] = !is_return;
        if is_return {
            return_node[i] = node;
        }
    }

    // The set of linearized operations as a bitset, plus one trailing word for the register:
    // the whole vector is the cache key, so a lookup needs no allocation.
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words + 1];
    let mut cache: HashSet<Box<[u64]>, ahash::RandomState> = HashSet::with_hasher(ahash::RandomState::new());
    let mut stack: Vec<(usize, ValueId)> = Vec::new();
    let mut register = ABSENT;
    let finite_total = ops.iter().filter(|op| op.return_ns.is_some()).count();
    let mut finite_done = 0;
    let mut deepest: Option<Deepest> = None;
    let mut steps = 0u64;
    let mut entry = events.next[HEAD];
    loop {
        // Unknown writes still pending here are the ones that never took effect.
        if finite_done == finite_total {
            return (steps, Outcome::Linearizable);
        }
        if steps >= budget_steps {
            return (steps, Outcome::Undecided);
        }
        steps += 1;

        if entry != NIL && events.is_call[entry] {
            let i = events.op[entry];
            if let Some(after) = ops[i].effect.apply(register) {
                linearized[i / 64] |= 1 << (i % 64);
                linearized[words] = u64::from(after);
                if !cache.contains(linearized.as_slice()) {
                    cache.insert(linearized.clone().into_boxed_slice());
                    stack.push((entry, register));
                    register = after;
                    events.lift(entry, return_node[i]);
                    finite_done += usize::from(ops[i].return_ns.is_some());
                    entry = events.next[HEAD];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = events.next[entry];
            continue;
        }

        // A return (or, defensively, the end of the list): its operation had to take effect by
        // now and has not, so some earlier choice was wrong.
        if entry != NIL && deepest.as_ref().is_none_or(|d| stack.len() > d.depth) {
            let mut pending = Vec::new();
            let mut node = events.next[HEAD];
            while node != entry && pending.len() < DIAGNOSTIC_OPS_MAX {
                pending.push(events.op[node]);
                node = events.next[node];
            }
            deepest = Some(Deepest {
                depth: stack.len(),
                recent: stack[stack.len().saturating_sub(DIAGNOSTIC_OPS_MAX)..]
                    .iter()
                    .map(|&(call, _)| events.op[call])
                    .collect(),
                register,
                blocked: events.op[entry],
                pending,
            });
        }
        let Some((call, before)) = stack.pop() else {
            return (steps, Outcome::Violation(deepest.unwrap_or_default()));
        };
        let i = events.op[call];
        linearized[i / 64] &= !(1 << (i % 64));
        register = before;
        events.unlift(call, return_node[i]);
        finite_done -= usize::from(ops[i].return_ns.is_some());
        entry = events.next[call];
    }
}

fn explain(history: &[Operation], ops: &[KeyOp], values: &[&[u8]], deepest: &Deepest) -> String {
    let list = |of: &[usize]| {
        if of.is_empty() {
            return "none".to_string();
        }
        of.iter().map(|&i| describe(ops[i].index, &history[ops[i].index])).collect::<Vec<_>>().join("; ")
    };
    let register = match deepest.register {
        ABSENT => "absent".to_string(),
        id => show(values[id as usize]),
    };
    let blocked = &ops[deepest.blocked];
    format!(
        "no order of the {} operations considered on this key explains their outputs. The search \
         got deepest with {} linearized, the last being [{}], leaving the register {register}; \
         there {} had to take effect before its return at {} ns, and none of the pending \
         operations [{}] leads to a complete linearization",
        ops.len(),
        deepest.depth,
        list(&deepest.recent),
        describe(blocked.index, &history[blocked.index]),
        blocked.return_ns.unwrap_or(u64::MAX),
        list(&deepest.pending),
    )
}

/// `#index client c put "v" -> ok [call, return]`, with `∞)` for an unknown outcome.
fn describe(index: usize, op: &Operation) -> String {
    let outcome = |out: &Output| if *out == Output::Unknown { "unknown" } else { "ok" };
    let what = match (&op.input, &op.output) {
        (Input::Put { value, .. }, out) => format!("put {} -> {}", show(value), outcome(out)),
        (Input::Delete { .. }, out) => format!("delete -> {}", outcome(out)),
        (Input::Get { .. }, Output::Value(Some(v))) => format!("get -> {}", show(v)),
        (Input::Get { .. }, Output::Value(None)) => "get -> absent".to_string(),
        (Input::Get { .. }, _) => "get -> unknown".to_string(),
    };
    let until = op.return_ns.map_or("∞)".to_string(), |r| format!("{r}]"));
    format!("#{index} client {} {what} [{}, {until}", op.client, op.call_ns)
}

/// Bytes as a quoted, escaped string, cut short when long.
fn show(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 32;
    if bytes.len() <= SHOWN_BYTES_MAX {
        format!("\"{}\"", bytes.escape_ascii())
    } else {
        format!("\"{}\"… ({} bytes)", bytes[..SHOWN_BYTES_MAX].escape_ascii(), bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::RngExt;
    use proptest::test_runner::{RngAlgorithm, TestRng};

    const BUDGET: u64 = 1_000_000;

    fn put(client: u64, call_ns: u64, return_ns: u64, key: &str, value: &str) -> Operation {
        Operation {
            client,
            call_ns,
            return_ns: Some(return_ns),
            input: Input::Put { key: key.into(), value: value.into() },
            output: Output::Ok,
        }
    }

    fn put_unknown(client: u64, call_ns: u64, key: &str, value: &str) -> Operation {
        Operation {
            client,
            call_ns,
            return_ns: None,
            input: Input::Put { key: key.into(), value: value.into() },
            output: Output::Unknown,
        }
    }

    fn get(client: u64, call_ns: u64, return_ns: u64, key: &str, value: Option<&str>) -> Operation {
        Operation {
            client,
            call_ns,
            return_ns: Some(return_ns),
            input: Input::Get { key: key.into() },
            output: Output::Value(value.map(Into::into)),
        }
    }

    fn delete(client: u64, call_ns: u64, return_ns: u64, key: &str) -> Operation {
        Operation {
            client,
            call_ns,
            return_ns: Some(return_ns),
            input: Input::Delete { key: key.into() },
            output: Output::Ok,
        }
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check(history, BUDGET).expect("valid history").verdict
    }

    #[track_caller]
    fn assert_linearizable(history: &[Operation]) {
        let v = verdict(history);
        assert_eq!(v, Verdict::Linearizable, "{v}");
    }

    #[track_caller]
    fn assert_violation(history: &[Operation]) -> String {
        match verdict(history) {
            Verdict::Violation { detail, .. } => detail,
            other => panic!("expected a violation, got {other}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        let report = check(&[], 0).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert!(report.keys.is_empty());
    }

    #[test]
    fn sequential_operations_pass() {
        assert_linearizable(&[
            get(1, 0, 10, "k", None),
            put(1, 20, 30, "k", "a"),
            get(2, 40, 50, "k", Some("a")),
            put(2, 60, 70, "k", "b"),
            get(1, 80, 90, "k", Some("b")),
            delete(1, 100, 110, "k"),
            get(2, 120, 130, "k", None),
            delete(2, 140, 150, "k"),
            get(1, 160, 170, "k", None),
        ]);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [Some("a"), Some("b")] {
            assert_linearizable(&[
                put(1, 0, 10, "k", "a"),
                put(1, 20, 100, "k", "b"),
                get(2, 30, 40, "k", seen),
            ]);
        }
        // Before the first write, the old value is "absent".
        assert_linearizable(&[put(1, 0, 100, "k", "a"), get(2, 30, 40, "k", None)]);
    }

    #[test]
    fn equal_timestamps_are_concurrent() {
        // The put returned at 10 and the get was called at 10: either order is allowed.
        assert_linearizable(&[put(1, 0, 10, "k", "a"), get(2, 10, 20, "k", None)]);
        // One nanosecond apart, the put precedes the get, which must see it.
        assert_violation(&[put(1, 0, 10, "k", "a"), get(2, 11, 20, "k", None)]);
        // Zero-length operations are fine.
        assert_linearizable(&[put(1, 5, 5, "k", "a"), get(2, 5, 5, "k", Some("a"))]);
    }

    #[test]
    fn an_unknown_write_seen_later_passes() {
        assert_linearizable(&[
            put(1, 0, 10, "k", "a"),
            put_unknown(2, 20, "k", "b"),
            get(3, 1000, 1010, "k", Some("b")),
        ]);
        // Even after the writer gave up and did something else: the request was in flight.
        assert_linearizable(&[
            put_unknown(2, 20, "k", "b"),
            get(2, 500, 510, "k", None),
            get(3, 1000, 1010, "k", Some("b")),
        ]);
    }

    #[test]
    fn an_unknown_write_never_seen_passes() {
        assert_linearizable(&[
            put(1, 0, 10, "k", "a"),
            put_unknown(2, 20, "k", "b"),
            get(3, 1000, 1010, "k", Some("a")),
            get(1, 2000, 2010, "k", Some("a")),
        ]);
        // With nothing after it at all.
        assert_linearizable(&[put_unknown(2, 20, "k", "b")]);
    }

    #[test]
    fn an_unknown_write_takes_effect_at_most_once_and_not_before_its_call() {
        // Seen, then gone with no other write: it cannot have been applied twice.
        assert_violation(&[
            put(1, 0, 10, "k", "a"),
            put_unknown(2, 20, "k", "b"),
            get(3, 100, 110, "k", Some("b")),
            get(3, 200, 210, "k", Some("a")),
        ]);
        // Seen by a read that returned before it was called.
        assert_violation(&[get(3, 0, 10, "k", Some("b")), put_unknown(2, 20, "k", "b")]);
    }

    #[test]
    fn unknown_reads_are_dropped() {
        let unknown_read = Operation {
            client: 9,
            call_ns: 0,
            return_ns: None,
            input: Input::Get { key: "k".into() },
            output: Output::Unknown,
        };
        let report =
            check(&[put(1, 0, 10, "k", "a"), unknown_read, get(1, 20, 30, "k", Some("a"))], BUDGET).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert_eq!((report.ops_checked, report.unknown_reads_dropped), (2, 1));
        assert_eq!(report.keys[0].ops, 2);
    }

    #[test]
    fn a_stale_read_is_rejected() {
        let detail = assert_violation(&[
            put(1, 0, 10, "k", "a"),
            put(1, 20, 30, "k", "b"),
            get(2, 40, 50, "k", Some("a")),
        ]);
        assert!(detail.contains("#2 client 2 get -> \"a\" [40, 50]"), "{detail}");
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        assert_violation(&[put(1, 0, 10, "k", "a"), get(2, 5, 50, "k", Some("z"))]);
    }

    #[test]
    fn a_lost_write_is_rejected() {
        assert_violation(&[put(1, 0, 10, "k", "a"), get(2, 20, 30, "k", None)]);
        // A delete explains the absence, unless it came before the put.
        assert_linearizable(&[put(1, 0, 10, "k", "a"), delete(3, 12, 14, "k"), get(2, 20, 30, "k", None)]);
        assert_violation(&[delete(3, 0, 5, "k"), put(1, 10, 15, "k", "a"), get(2, 20, 30, "k", None)]);
    }

    #[test]
    fn reads_going_backwards_are_rejected() {
        assert_violation(&[
            put(1, 0, 10, "k", "a"),
            put(1, 20, 30, "k", "b"),
            get(2, 40, 50, "k", Some("b")),
            get(2, 60, 70, "k", Some("a")),
        ]);
        // Even when the writes are concurrent with each other, once a client saw "b" after both
        // completed, the order is settled.
        assert_violation(&[
            put(1, 0, 30, "k", "a"),
            put(3, 0, 30, "k", "b"),
            get(2, 40, 50, "k", Some("b")),
            get(2, 60, 70, "k", Some("a")),
        ]);
    }

    #[test]
    fn two_readers_disagreeing_on_the_order_of_two_writes_are_rejected() {
        // Both writes are concurrent with every read; each reader's two reads do not overlap.
        let writes = [put(1, 0, 1000, "k", "a"), put(2, 0, 1000, "k", "b")];
        let a_then_b = [get(3, 100, 110, "k", Some("a")), get(3, 200, 210, "k", Some("b"))];
        let b_then_a = [get(4, 300, 310, "k", Some("b")), get(4, 400, 410, "k", Some("a"))];
        // Each reader alone is fine: the writes may land in either order.
        assert_linearizable(&[&writes[..], &a_then_b[..]].concat());
        assert_linearizable(&[&writes[..], &b_then_a[..]].concat());
        // Together, each write would have to land twice.
        assert_violation(&[&writes[..], &a_then_b[..], &b_then_a[..]].concat());
        // The same with the readers interleaved in time.
        assert_violation(&[
            put(1, 0, 1000, "k", "a"),
            put(2, 0, 1000, "k", "b"),
            get(3, 100, 110, "k", Some("a")),
            get(4, 120, 130, "k", Some("b")),
            get(3, 140, 150, "k", Some("b")),
            get(4, 160, 170, "k", Some("a")),
        ]);
        // And with the two readers overlapping each other (but not themselves).
        assert_violation(&[
            put(1, 0, 1000, "k", "a"),
            put(2, 0, 1000, "k", "b"),
            get(3, 100, 200, "k", Some("a")),
            get(4, 100, 200, "k", Some("b")),
            get(3, 300, 400, "k", Some("b")),
            get(4, 300, 400, "k", Some("a")),
        ]);
    }

    #[test]
    fn keys_are_checked_independently() {
        let history = [
            put(1, 0, 10, "good", "a"),
            put(1, 0, 10, "bad", "a"),
            get(2, 20, 30, "bad", None),
            get(2, 20, 30, "good", Some("a")),
        ];
        let report = check(&history, BUDGET).unwrap();
        assert!(matches!(&report.verdict, Verdict::Violation { key, .. } if key == b"bad"));
        assert_eq!(report.keys.len(), 2);
        assert_eq!(report.keys[0].key, b"bad");
        assert_eq!(report.keys[1].verdict, Verdict::Linearizable);
        assert_eq!(report.ops_checked, 4);
    }

    #[test]
    fn malformed_operations_are_errors_not_panics() {
        let mut backwards = put(1, 10, 5, "k", "a");
        assert_eq!(
            check(&[backwards.clone()], BUDGET),
            Err(HistoryError::ReturnBeforeCall { index: 0, call_ns: 10, return_ns: 5 })
        );
        backwards.return_ns = Some(10);
        assert!(check(&[backwards], BUDGET).is_ok());

        let mut get_ok = get(1, 0, 1, "k", None);
        get_ok.output = Output::Ok;
        let mut put_value = put(1, 0, 1, "k", "a");
        put_value.output = Output::Value(None);
        let mut unknown_with_return = put_unknown(1, 0, "k", "a");
        unknown_with_return.return_ns = Some(5);
        let mut known_without_return = delete(1, 0, 1, "k");
        known_without_return.return_ns = None;
        for bad in [get_ok, put_value, unknown_with_return, known_without_return] {
            let history = [put(1, 0, 1, "k", "a"), bad];
            match check(&history, BUDGET) {
                Err(e @ HistoryError::Malformed { index: 1, .. }) => assert!(!e.to_string().is_empty()),
                other => panic!("expected Malformed for #1, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_long_sequential_history_costs_about_one_step_per_operation() {
        let ops = 10_000u64;
        let history: Vec<Operation> = (0..ops)
            .map(|i| {
                let value = (i / 2).to_string();
                if i % 2 == 0 {
                    put(i % 3, i * 10, i * 10 + 5, "k", &value)
                } else {
                    get(i % 3, i * 10, i * 10 + 5, "k", Some(&value))
                }
            })
            .collect();
        let report = check(&history, 2 * ops).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert!(report.keys[0].steps <= 2 * ops, "{} steps", report.keys[0].steps);
    }

    /// `writers` mutually concurrent writes, then a read of a value none of them wrote: the
    /// search must try every subset and order of the writes before giving up. With unknown
    /// outcomes, each written value is also read by one of as many concurrent reads (a write
    /// nobody read would be left out up front).
    fn pathological(writers: u64, unknown: bool) -> Vec<Operation> {
        let mut history = Vec::new();
        for c in 0..writers {
            let value = format!("v{c}");
            if unknown {
                history.push(put_unknown(c, 0, "k", &value));
                history.push(get(writers + c, 200, 300, "k", Some(&value)));
            } else {
                history.push(put(c, 0, 100, "k", &value));
            }
        }
        history.push(get(2 * writers, 400, 500, "k", Some("never written")));
        history
    }

    #[test]
    fn the_budget_turns_blowup_into_undecided() {
        for unknown in [false, true] {
            let budget = 10_000;
            let report = check(&pathological(24, unknown), budget).unwrap();
            assert_eq!(
                report.verdict,
                Verdict::Undecided { key: b"k".to_vec() },
                "unknown writes: {unknown}"
            );
            assert_eq!(report.keys[0].steps, budget);
            // Small enough to finish, the same shape is a definite violation.
            assert!(matches!(verdict(&pathological(6, unknown)), Verdict::Violation { .. }));
        }
    }

    #[test]
    fn unknown_writes_nobody_read_cost_nothing() {
        let mut history: Vec<Operation> = (0..64).map(|c| put_unknown(c, 0, "k", &format!("v{c}"))).collect();
        history.push(get(99, 10, 20, "k", None));
        let report = check(&history, 10).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        history.push(get(99, 30, 40, "k", Some("never written")));
        let report = check(&history, 10).unwrap();
        assert!(matches!(report.verdict, Verdict::Violation { .. }), "{}", report.verdict);
        assert_eq!(report.keys[0].ops, 66);
    }

    #[test]
    fn a_violation_outranks_an_undecided_key() {
        let mut history = pathological(24, false);
        history.extend([put(1, 0, 10, "other", "a"), get(2, 20, 30, "other", None)]);
        let report = check(&history, 10_000).unwrap();
        assert!(matches!(&report.verdict, Verdict::Violation { key, .. } if key == b"other"));
        assert_eq!(report.keys[0].verdict, Verdict::Undecided { key: b"k".to_vec() });
    }

    fn rng(seed: u64) -> TestRng {
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed.to_le_bytes(), [3; 8], [1; 8], [4; 8]].concat())
    }

    /// A history from a real sequential execution: each operation gets a linearization point
    /// inside its [call, return] interval (anywhere after its call, or nowhere, for an unknown
    /// write), the register map is run in the order of those points, and reads record what it
    /// held. Linearizable by construction. Every written value is unique.
    fn random_history(r: &mut TestRng) -> Vec<Operation> {
        let clients = r.random_range(2..6u64);
        let keys = r.random_range(1..4u32);
        let mut history = Vec::new();
        let mut points_ns: Vec<Option<u64>> = Vec::new();
        let mut next_value = 0u32;
        for client in 0..clients {
            let mut t_ns = r.random_range(0..100u64);
            for _ in 0..r.random_range(5..30) {
                let call_ns = t_ns + r.random_range(0..50u64);
                let end_ns = call_ns + r.random_range(0..200u64);
                let key: Key = format!("k{}", r.random_range(0..keys)).into();
                let input = match r.random_range(0..20) {
                    0..9 => {
                        next_value += 1;
                        Input::Put { key, value: format!("v{next_value}").into() }
                    }
                    9..12 => Input::Delete { key },
                    _ => Input::Get { key },
                };
                let is_get = matches!(input, Input::Get { .. });
                let (return_ns, output, point_ns) = if r.random_bool(0.1) {
                    // The client gives up at end_ns; the request may still land later, or never.
                    let lands = !is_get && r.random_bool(0.5);
                    (None, Output::Unknown, lands.then(|| r.random_range(call_ns..=end_ns + 500)))
                } else {
                    let output = if is_get { Output::Value(None) } else { Output::Ok };
                    (Some(end_ns), output, Some(r.random_range(call_ns..=end_ns)))
                };
                history.push(Operation { client, call_ns, return_ns, input, output });
                points_ns.push(point_ns);
                t_ns = end_ns;
            }
        }
        let mut order: Vec<usize> = (0..history.len()).filter(|&i| points_ns[i].is_some()).collect();
        order.sort_by_key(|&i| (points_ns[i], i));
        let mut map: HashMap<Key, Value> = HashMap::new();
        for i in order {
            let op = &mut history[i];
            match &op.input {
                Input::Put { key, value } => {
                    map.insert(key.clone(), value.clone());
                }
                Input::Delete { key } => {
                    map.remove(key);
                }
                Input::Get { key } => op.output = Output::Value(map.get(key).cloned()),
            }
        }
        history
    }

    fn is_known_read(op: &Operation) -> bool {
        matches!(op.input, Input::Get { .. }) && op.return_ns.is_some()
    }

    /// Reads that can be made strictly stale, each with the stale value: a known put of that
    /// value returned before a known overwrite (put or delete) was called, and the overwrite
    /// returned before the read was called. Values are unique, so no other put could explain it.
    fn stale_candidates(history: &[Operation]) -> Vec<(usize, Value)> {
        let known_write_on = |op: &Operation, key: &[u8]| {
            matches!(op.input, Input::Put { .. } | Input::Delete { .. })
                && op.return_ns.is_some()
                && op.input.key() == key
        };
        let mut found = Vec::new();
        for (g, read) in history.iter().enumerate().filter(|(_, op)| is_known_read(op)) {
            let key = read.input.key();
            let overwrite_called_ns = history
                .iter()
                .filter(|w| known_write_on(w, key) && w.return_ns.unwrap() < read.call_ns)
                .map(|w| w.call_ns);
            let Some(latest_ns) = overwrite_called_ns.max() else { continue };
            let stale = history.iter().find_map(|p| match &p.input {
                Input::Put { value, .. } if known_write_on(p, key) && p.return_ns.unwrap() < latest_ns => {
                    Some(value.clone())
                }
                _ => None,
            });
            if let Some(value) = stale {
                found.push((g, value));
            }
        }
        found
    }

    #[test]
    fn random_histories_from_real_executions_pass_and_their_mutations_fail() {
        let (mut never_written, mut stale) = (0, 0);
        for seed in 0..400 {
            let mut r = rng(seed);
            let history = random_history(&mut r);
            let report = check(&history, BUDGET).unwrap();
            assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}: {}", report.verdict);

            let reads: Vec<usize> = (0..history.len()).filter(|&i| is_known_read(&history[i])).collect();
            if !reads.is_empty() {
                let g = reads[r.random_range(0..reads.len())];
                let mut mutated = history.clone();
                mutated[g].output = Output::Value(Some(b"never written".to_vec()));
                let v = check(&mutated, BUDGET).unwrap().verdict;
                assert!(
                    matches!(&v, Verdict::Violation { key, .. } if key == history[g].input.key()),
                    "seed {seed}: a read of a value never written passed: {v}"
                );
                never_written += 1;
            }

            let candidates = stale_candidates(&history);
            if !candidates.is_empty() {
                let (g, value) = candidates[r.random_range(0..candidates.len())].clone();
                let mut mutated = history.clone();
                mutated[g].output = Output::Value(Some(value));
                let v = check(&mutated, BUDGET).unwrap().verdict;
                assert!(
                    matches!(&v, Verdict::Violation { key, .. } if key == history[g].input.key()),
                    "seed {seed}: a strictly stale read passed: {v}"
                );
                stale += 1;
            }
        }
        // The mutations must actually have been exercised, not skipped for want of candidates.
        assert!(never_written > 300 && stale > 200, "{never_written} never-written, {stale} stale mutations");
    }

    /// Whether some order of `history` explains it, by trying every order of every subset that
    /// keeps all operations with a known outcome: the definition itself, for tiny histories.
    fn brute_force(history: &[Operation]) -> bool {
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|op| !(matches!(op.input, Input::Get { .. }) && op.output == Output::Unknown))
            .collect();
        let optional: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].return_ns.is_none()).collect();
        let must_precede = |a: &Operation, b: &Operation| a.return_ns.is_some_and(|r| r < b.call_ns);
        let explains = |order: &[usize]| {
            let mut register: Option<&Value> = None;
            for (n, &i) in order.iter().enumerate() {
                if order[n + 1..].iter().any(|&j| must_precede(ops[j], ops[i])) {
                    return false;
                }
                match (&ops[i].input, &ops[i].output) {
                    (Input::Put { value, .. }, _) => register = Some(value),
                    (Input::Delete { .. }, _) => register = None,
                    (Input::Get { .. }, Output::Value(v)) if v.as_ref() != register => return false,
                    (Input::Get { .. }, _) => {}
                }
            }
            true
        };
        fn permutations(items: &mut Vec<usize>, k: usize, found: &mut dyn FnMut(&[usize]) -> bool) -> bool {
            if k == items.len() {
                return found(items);
            }
            for i in k..items.len() {
                items.swap(k, i);
                if permutations(items, k + 1, found) {
                    return true;
                }
                items.swap(k, i);
            }
            false
        }
        (0..1u32 << optional.len()).any(|mask| {
            let mut included: Vec<usize> = (0..ops.len())
                .filter(|&i| match optional.iter().position(|&o| o == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .collect();
            permutations(&mut included, 0, &mut |order| explains(order))
        })
    }

    #[test]
    fn tiny_random_histories_agree_with_brute_force() {
        let (mut linearizable, mut violations) = (0, 0);
        for seed in 0..3000 {
            let mut r = rng(1_000_000 + seed);
            let value = |r: &mut TestRng| -> Value { [b"a", b"b", b"c"][r.random_range(0..3)].to_vec() };
            let history: Vec<Operation> = (0..r.random_range(1..8))
                .map(|client| {
                    let call_ns = r.random_range(0..20u64);
                    let return_ns = (!r.random_bool(0.15)).then(|| call_ns + r.random_range(0..10u64));
                    let key: Key = b"k".to_vec();
                    let (input, output) = match r.random_range(0..10) {
                        0..4 => (Input::Put { key, value: value(&mut r) }, Output::Ok),
                        4..5 => (Input::Delete { key }, Output::Ok),
                        _ => {
                            let seen = r.random_bool(0.8).then(|| value(&mut r));
                            (Input::Get { key }, Output::Value(seen))
                        }
                    };
                    let output = if return_ns.is_none() { Output::Unknown } else { output };
                    Operation { client, call_ns, return_ns, input, output }
                })
                .collect();
            let expected = brute_force(&history);
            let got = check(&history, BUDGET).unwrap().verdict;
            assert!(!matches!(got, Verdict::Undecided { .. }), "seed {seed}");
            assert_eq!(got.is_linearizable(), expected, "seed {seed}: {got}\n{history:#?}");
            if expected {
                linearizable += 1;
            } else {
                violations += 1;
            }
        }
        assert!(
            linearizable > 500 && violations > 500,
            "{linearizable} linearizable, {violations} violations"
        );
    }
}
