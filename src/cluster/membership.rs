//! The cluster file: which nodes make the cluster, where each listens for the others, how many
//! cores each drives its replicas on, and the TLS identity each must present. Every node holds
//! the same file (plus the line naming itself): it is the whole trust the node-to-node listener
//! has, so a process whose key's fingerprint is not in it cannot send a Raft message or join.
//!
//! ```text
//! # comments and blank lines are ignored
//! ranges 48
//! replication 3
//! node 1 10.0.0.1:7511 cores=2 SHA256:Q5Wf0…
//! node 2 10.0.0.2:7511 cores=2 SHA256:x2k9T…
//! node 3 10.0.0.3:7511 cores=4 SHA256:mN0aa…
//! self 1
//! ```
//!
//! Each node holds a **place** (`slot`): the id of the node that held it when the cluster was
//! made. Ranges are placed on places (`RangeMap` over the places), so a node that takes another's
//! place — `node 4 10.0.0.4:7511 cores=2 SHA256:… replaces=3` — holds the same ranges, and its
//! replicas start from the same initial membership every replica of those ranges started from
//! (the original nodes of their places), whatever the log they are sent begins with.
//! [`Membership::change_to`] checks that a new file is such a change of the current one.
//!
//! Core `c` of a node listens for its peers on the node's port + `c`: a replica's messages go
//! straight to the core that drives it on the receiving node (`RangeMap::core_of`: the core
//! that stores the range's rows, which is why R must be a multiple of every node's cores), with no
//! hop between cores there.

use super::ranges::RangeMap;
use super::{NodeId, RangeId};
use crate::limits::CLUSTER_FILE_BYTES_MAX;
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Core 0's node-to-node address; core `c` listens on its port + `c`.
    pub peer: SocketAddr,
    pub cores: usize,
    /// SHA-256 of the node's TLS key (SubjectPublicKeyInfo), as SERVER_INFO reports it.
    pub fingerprint: [u8; 32],
    /// The place it holds: its own id, or the original node's of the place it took
    /// (`replaces=`).
    pub slot: NodeId,
}

impl Member {
    /// Where core `core` of this node takes its peers' messages.
    pub fn peer_addr(&self, core: usize) -> SocketAddr {
        let mut a = self.peer;
        a.set_port(self.peer.port() + core as u16);
        a
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub ranges: RangeId,
    pub replication: usize,
    /// Sorted by id.
    pub members: Vec<Member>,
    /// This node's id, when the file is a node's own copy (`self N`).
    pub this: Option<NodeId>,
    /// The places the cluster was made with, sorted (`origin …`; by default the file's): every
    /// replica of a range starts from the membership they give it, so that a replica made
    /// later replays the range's log from where the first ones did.
    pub origin: Vec<NodeId>,
    /// The highest node id the cluster has used (`highest-id N`; by default the file's): a new
    /// node's id is above it, so no id comes back.
    pub highest_id: NodeId,
}

/// What a membership change does (`Membership::change_to`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// (old, new): a new node takes an old one's place.
    pub replaced: Vec<(NodeId, NodeId)>,
    /// New nodes in new places.
    pub added: Vec<NodeId>,
    /// Nodes whose places go.
    pub removed: Vec<NodeId>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.replaced.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

/// `SHA256:` and the unpadded base64 of 32 bytes (as `datadir::fingerprint_string` writes it),
/// or 64 hex digits.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    if let Some(b64) = s.strip_prefix("SHA256:") {
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::with_capacity(32);
        for c in b64.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32;
            bits = bits << 6 | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        return out.try_into().ok();
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn fingerprint_text(fp: &[u8; 32]) -> String {
    crate::security::tls::fingerprint_string(fp)
}

impl Membership {
    /// Parse a cluster file; the error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Membership, String> {
        if text.len() > CLUSTER_FILE_BYTES_MAX {
            return Err(format!("a cluster file is at most {CLUSTER_FILE_BYTES_MAX} bytes"));
        }
        let (mut ranges, mut replication, mut this, mut highest_id) = (None, None, None, None);
        let mut origin: Option<Vec<NodeId>> = None;
        let mut members: Vec<Member> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let at = |what: String| format!("line {}: {what}", i + 1);
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |w: Option<&&str>, what: &str| -> Result<u64, String> {
                w.and_then(|w| w.parse::<u64>().ok()).ok_or_else(|| at(format!("{what} must be a number")))
            };
            match words.first().copied() {
                None => {}
                Some("ranges") if words.len() == 2 => {
                    let r = number(words.get(1), "ranges")?;
                    ranges = Some(RangeId::try_from(r).map_err(|_| at("too many ranges".into()))?);
                }
                Some("replication") if words.len() == 2 => {
                    replication = Some(number(words.get(1), "replication")? as usize)
                }
                Some("self") if words.len() == 2 => this = Some(number(words.get(1), "self")?),
                Some("highest-id") if words.len() == 2 => {
                    highest_id = Some(number(words.get(1), "highest-id")?)
                }
                Some("origin") if words.len() >= 2 => {
                    let mut places = words[1..].iter().map(|w| number(Some(w), "a place")).collect::<Result<
                        Vec<_>,
                        _,
                    >>(
                    )?;
                    places.sort_unstable();
                    origin = Some(places);
                }
                Some("node") if words.len() == 5 || words.len() == 6 => {
                    let id = number(words.get(1), "a node id")?;
                    let peer: SocketAddr =
                        words[2].parse().map_err(|_| at(format!("{:?} is not an IP:PORT", words[2])))?;
                    let cores = words[3]
                        .strip_prefix("cores=")
                        .and_then(|c| c.parse::<usize>().ok())
                        .filter(|c| (1..=u16::MAX as usize).contains(c))
                        .ok_or_else(|| at("the third field is cores=N (N from 1 to 65535)".into()))?;
                    if peer.port() as usize + cores > u16::MAX as usize + 1 || peer.port() == 0 {
                        return Err(at(format!("port {} + {cores} cores does not fit", peer.port())));
                    }
                    let fingerprint = parse_fingerprint(words[4]).ok_or_else(|| {
                        at(format!("{:?} is not a fingerprint (SHA256:… as the server prints it)", words[4]))
                    })?;
                    let slot = match words.get(5) {
                        None => id,
                        Some(w) => w
                            .strip_prefix("replaces=")
                            .and_then(|n| n.parse::<NodeId>().ok())
                            .filter(|n| *n != id)
                            .ok_or_else(|| {
                                at("the fifth field is replaces=N (the node whose place it takes)".into())
                            })?,
                    };
                    if members.iter().any(|m| m.id == id) {
                        return Err(at(format!("node {id} is named twice")));
                    }
                    if members.iter().any(|m| m.slot == slot) {
                        return Err(at(format!("node {id} takes a place another node holds")));
                    }
                    if members.iter().any(|m| m.fingerprint == fingerprint) {
                        return Err(at(format!("node {id} has the fingerprint of another node")));
                    }
                    members.push(Member { id, peer, cores, fingerprint, slot });
                }
                Some(w @ ("ranges" | "replication" | "self" | "node" | "highest-id" | "origin")) => {
                    return Err(at(format!("wrong number of fields for {w:?}")))
                }
                Some(w) => return Err(at(format!("unknown keyword {w:?}"))),
            }
        }
        members.sort_by_key(|m| m.id);
        let mut slots: Vec<NodeId> = members.iter().map(|m| m.slot).collect();
        slots.sort_unstable();
        let highest = members.iter().map(|m| m.id.max(m.slot)).chain(origin.iter().flatten().copied()).max();
        let m = Membership {
            ranges: ranges.ok_or("the cluster file has no `ranges` line")?,
            replication: replication.ok_or("the cluster file has no `replication` line")?,
            members,
            this,
            origin: origin.unwrap_or(slots),
            highest_id: highest_id.unwrap_or(0).max(highest.unwrap_or(0)),
        };
        m.range_map()?;
        m.origin_map().map_err(|e| format!("the origin places: {e}"))?;
        if let Some(n) = m.members.iter().find(|n| m.ranges as usize % n.cores != 0) {
            return Err(format!(
                "node {} has cores={}, and {} ranges do not split evenly over them: ranges must be a multiple of every node's cores",
                n.id, n.cores, m.ranges
            ));
        }
        if let Some(id) = this {
            if m.member(id).is_none() {
                return Err(format!("`self {id}` names no node of the file"));
            }
        }
        Ok(m)
    }

    /// The file as `parse` reads it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# Velocity cluster membership (docs/cluster.md)\nranges {}\nreplication {}\n",
            self.ranges, self.replication
        );
        for m in &self.members {
            out.push_str(&format!(
                "node {} {} cores={} {}",
                m.id,
                m.peer,
                m.cores,
                fingerprint_text(&m.fingerprint)
            ));
            if m.slot != m.id {
                out.push_str(&format!(" replaces={}", m.slot));
            }
            out.push('\n');
        }
        let mut slots: Vec<NodeId> = self.members.iter().map(|m| m.slot).collect();
        slots.sort_unstable();
        if slots != self.origin {
            let places: Vec<String> = self.origin.iter().map(|p| p.to_string()).collect();
            out.push_str(&format!("origin {}\n", places.join(" ")));
        }
        if self.members.iter().map(|m| m.id.max(m.slot)).max() != Some(self.highest_id) {
            out.push_str(&format!("highest-id {}\n", self.highest_id));
        }
        if let Some(id) = self.this {
            out.push_str(&format!("self {id}\n"));
        }
        out
    }

    /// Ranges over the places the cluster was made with: each range's first membership.
    pub fn origin_map(&self) -> Result<RangeMap, String> {
        RangeMap::new(self.ranges, self.replication, &self.origin)
    }

    /// Ranges over the places (`Member::slot`).
    pub fn range_map(&self) -> Result<RangeMap, String> {
        let slots: Vec<NodeId> = self.members.iter().map(|m| m.slot).collect();
        RangeMap::new(self.ranges, self.replication, &slots)
    }

    /// The node holding place `slot` now.
    pub fn in_slot(&self, slot: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.slot == slot)
    }

    /// `next` as a change of this membership, and what it changes. A change gives places to
    /// new nodes (`replaces=`), adds new nodes in new places, and removes nodes with their
    /// places; the ranges, the replication and the cluster's origin stay, a node that stays
    /// keeps its address, cores and key, and a new node's id is above every id the cluster has
    /// used (an id is never used twice, so a node that lost its data cannot come back under its
    /// old one). A new node's `replaces=` names the place, by its first node, so that every
    /// node's file, the new node's too, places the ranges alike. Nodes that go (replaced or
    /// removed) are at most ⌊(RF−1)/2⌋ per change: each range keeps a majority of the replicas
    /// it had, which the change needs. No change: `next` says what this membership says.
    pub fn change_to(&self, next: &Membership) -> Result<(Membership, Change), String> {
        if (next.ranges, next.replication) != (self.ranges, self.replication) {
            return Err(format!(
                "a change keeps the ranges and the replication ({} and {}); the new file says {} and {}",
                self.ranges, self.replication, next.ranges, next.replication
            ));
        }
        let highest = self.highest_id;
        let mut out = next.clone();
        out.this = self.this;
        out.origin = self.origin.clone();
        let mut change = Change::default();
        for m in &mut out.members {
            if let Some(old) = self.member(m.id) {
                if (m.peer, m.cores, m.fingerprint) != (old.peer, old.cores, old.fingerprint) {
                    return Err(format!(
                        "node {} stays but its address, cores or key differ: a node that changes is a new node with a new id",
                        m.id
                    ));
                }
                if m.slot != old.slot {
                    // Its line as the cluster has it: a new node initialised with this file must
                    // place the ranges as the others do.
                    return Err(format!(
                        "node {} holds place {}: its line says replaces={} (as the cluster file of any node shows)",
                        m.id, old.slot, old.slot
                    ));
                }
                continue;
            }
            if m.id <= highest {
                return Err(format!(
                    "node {} is new, and a new node's id must be above every id the cluster has used (the highest is {highest})",
                    m.id
                ));
            }
            if m.slot == m.id {
                change.added.push(m.id);
                continue;
            }
            let Some(old) = self.in_slot(m.slot) else {
                if let Some(holder) = self.member(m.slot) {
                    // Every node's file must place the ranges alike, the new node's too.
                    return Err(format!(
                        "node {} replaces node {}, which holds place {}: write replaces={} (a place is named by its first node)",
                        m.id, holder.id, holder.slot, holder.slot
                    ));
                }
                return Err(format!(
                    "node {} is new and replaces=N names no place of the cluster ({} is none)",
                    m.id, m.slot
                ));
            };
            change.replaced.push((old.id, m.id));
        }
        for (old, new) in &change.replaced {
            if out.member(*old).is_some() {
                return Err(format!("node {new} replaces node {old}, which the new file still names"));
            }
        }
        for m in &self.members {
            if out.member(m.id).is_none() && !change.replaced.iter().any(|(old, _)| *old == m.id) {
                change.removed.push(m.id);
            }
        }
        let mut placed: Vec<NodeId> = out.members.iter().map(|m| m.slot).collect();
        placed.sort_unstable();
        placed.dedup();
        if placed.len() != out.members.len() {
            return Err("two nodes of the new file take one place".into());
        }
        let going = change.replaced.len() + change.removed.len();
        if going > (self.replication - 1) / 2 {
            return Err(format!(
                "the change takes {going} nodes out of the cluster at once, and with {} replicas of each range at most {} may go in one change \
                 (the rest of a range's replicas must be a majority): replace or remove them one change at a time",
                self.replication,
                (self.replication - 1) / 2
            ));
        }
        if let Some(me) = self.this {
            if out.member(me).is_none() {
                return Err(format!("the change takes this node ({me}) out of the cluster"));
            }
        }
        out.range_map()?;
        out.highest_id = out.members.iter().map(|m| m.id).max().unwrap_or(0).max(highest);
        out.members.sort_by_key(|m| m.id);
        Ok((out, change))
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The member whose key has this fingerprint: who is at the other end of a peer link.
    pub fn by_fingerprint(&self, fp: &[u8; 32]) -> Option<&Member> {
        self.members.iter().find(|m| &m.fingerprint == fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> String {
        fingerprint_text(&[b; 32])
    }

    fn file() -> String {
        format!(
            "# three nodes\nranges 48\nreplication 3\nnode 2 127.0.0.1:7521 cores=2 {}\nnode 1 127.0.0.1:7511 cores=1 {}\n\
             node 3 127.0.0.1:7531 cores=4 {}  # the big one\nself 2\n",
            fp(2),
            fp(1),
            hex::encode([3u8; 32])
        )
    }

    #[test]
    fn a_cluster_file_reads_back_as_written() {
        let m = Membership::parse(&file()).unwrap();
        assert_eq!(m.ranges, 48);
        assert_eq!(m.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(m.member(3).unwrap().fingerprint, [3; 32]);
        assert_eq!(m.member(3).unwrap().peer_addr(3), "127.0.0.1:7534".parse().unwrap());
        assert_eq!(m.this, Some(2));
        assert_eq!(Membership::parse(&m.render()).unwrap(), m);
        assert_eq!(m.by_fingerprint(&[1; 32]).unwrap().id, 1);
        assert_eq!(parse_fingerprint(&fp(7)), Some([7; 32]));
    }

    fn three() -> Membership {
        let text = format!(
            "ranges 12\nreplication 3\nnode 1 127.0.0.1:7511 cores=2 {}\nnode 2 127.0.0.1:7521 cores=2 {}\n\
             node 3 127.0.0.1:7531 cores=2 {}\nself 1\n",
            fp(1),
            fp(2),
            fp(3)
        );
        Membership::parse(&text).unwrap()
    }

    fn replace(m: &Membership, old: NodeId, line: &str) -> Membership {
        let shared = Membership { this: None, ..m.clone() };
        let mut text: String = shared
            .render()
            .lines()
            .filter(|l| !l.starts_with(&format!("node {old} ")))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(line);
        Membership::parse(&text).unwrap()
    }

    #[test]
    fn a_new_node_takes_a_place_and_holds_its_ranges() {
        let m = three();
        let line = format!("node 4 127.0.0.1:7541 cores=1 {} replaces=3\n", fp(4));
        let (next, change) = m.change_to(&replace(&m, 3, &line)).unwrap();
        assert_eq!(change, Change { replaced: vec![(3, 4)], ..Change::default() });
        assert_eq!(next.member(4).unwrap().slot, 3);
        assert_eq!(next.in_slot(3).unwrap().id, 4);
        assert_eq!(next.this, Some(1));
        // The places, and so every range's replicas, are the original nodes'.
        assert_eq!(next.range_map().unwrap(), m.range_map().unwrap());
        assert_eq!(Membership::parse(&next.render()).unwrap(), next);
        assert!(next.render().contains("replaces=3"));
        // Again: nothing to do.
        assert_eq!(next.change_to(&next).unwrap(), (next.clone(), Change::default()));
        // Node 4's line without the place it holds: refused, not guessed.
        let bare = Membership::parse(&next.render().replace(" replaces=3", "")).unwrap();
        assert!(next.change_to(&bare).unwrap_err().contains("replaces=3"));
        // Node 5 replaces node 4: the place is 3's.
        let line = format!("node 5 127.0.0.1:7551 cores=2 {} replaces=3\n", fp(5));
        let (later, change) = next.change_to(&replace(&next, 4, &line)).unwrap();
        assert_eq!(change.replaced, [(4, 5)]);
        assert_eq!(later.member(5).unwrap().slot, 3);
        let by_node = format!("node 5 127.0.0.1:7551 cores=2 {} replaces=4\n", fp(5));
        assert!(next.change_to(&replace(&next, 4, &by_node)).unwrap_err().contains("write replaces=3"));
    }

    #[test]
    fn nodes_join_and_leave_in_places_of_their_own_and_the_origin_stays() {
        let m = Membership { this: Some(2), ..three() };
        let join =
            Membership::parse(&(m.render() + &format!("node 4 127.0.0.1:7541 cores=2 {}\n", fp(4)))).unwrap();
        let (four, change) = m.change_to(&join).unwrap();
        assert_eq!(change, Change { added: vec![4], ..Change::default() });
        assert_eq!(four.range_map().unwrap().nodes(), &[1, 2, 3, 4]);
        // Every replica still starts from the three places the cluster was made with.
        assert_eq!(four.origin, [1, 2, 3]);
        assert_eq!(four.origin_map().unwrap(), m.range_map().unwrap());
        assert!(four.render().contains("origin 1 2 3"));
        assert_eq!(Membership::parse(&four.render()).unwrap(), four);
        // Two of a range's three replicas gone at once: no majority of its old replicas left.
        let two_go = replace(
            &replace(&four, 3, &format!("node 5 127.0.0.1:7551 cores=2 {} replaces=3\n", fp(5))),
            1,
            "",
        );
        assert!(four.change_to(&two_go).unwrap_err().contains("at most 1 may go"));
        // Node 1 leaves: its place goes, the ranges are placed over 2, 3 and 4.
        let (three_left, change) = four.change_to(&replace(&four, 1, "")).unwrap();
        assert_eq!(change, Change { removed: vec![1], ..Change::default() });
        assert_eq!(three_left.range_map().unwrap().nodes(), &[2, 3, 4]);
        assert_eq!(three_left.origin, [1, 2, 3]);
        // Node 4 leaves as node 5 joins: id 4 stays used.
        let node5 = format!("node 5 127.0.0.1:7551 cores=2 {}\n", fp(5));
        let (two_and_three, change) = three_left.change_to(&replace(&three_left, 4, &node5)).unwrap();
        assert_eq!(change, Change { added: vec![5], removed: vec![4], ..Change::default() });
        assert_eq!(two_and_three.highest_id, 5);
        let back = replace(&two_and_three, 5, &format!("node 4 127.0.0.1:7541 cores=2 {}\n", fp(4)));
        assert!(two_and_three.change_to(&back).unwrap_err().contains("above every id"));
    }

    #[test]
    fn a_change_that_is_not_a_replacement_is_refused_with_the_reason() {
        let m = three();
        let new4 = |rest: &str| format!("node 4 127.0.0.1:7541 cores=2 {}{rest}\n", fp(4));
        let cases = [
            // Reusing an id: the old node's log may still be remembered.
            (replace(&m, 3, &format!("node 3 127.0.0.1:7541 cores=2 {}\n", fp(4))), "new node with a new id"),
            (replace(&m, 3, &new4(" replaces=9")), "names no place"),
            (replace(&m, 1, &new4(" replaces=1")), "takes this node"),
            (Membership::parse(&(m.render() + &new4(" replaces=7"))).unwrap(), "names no place"),
        ];
        for (next, want) in cases {
            let e = m.change_to(&next).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let (next, _) = m.change_to(&replace(&m, 3, &new4(" replaces=3"))).unwrap();
        // Going back to the old file: node 3 is not a new node with a place.
        assert!(next.change_to(&m).unwrap_err().contains("above every id"));
        let mut other = m.clone();
        other.ranges = 24;
        assert!(m.change_to(&other).unwrap_err().contains("keeps the ranges"));
        let twice = format!(
            "ranges 4\nreplication 1\nnode 1 127.0.0.1:1 cores=1 {}\nnode 2 127.0.0.1:2 cores=1 {} replaces=1\n",
            fp(1),
            fp(2)
        );
        assert!(Membership::parse(&twice).unwrap_err().contains("place another node holds"));
    }

    #[test]
    fn a_bad_cluster_file_is_refused_naming_the_line() {
        let cases = [
            ("ranges 48\nreplication 3\nnode 1 127.0.0.1:1 cores=1 x\n", "line 3"),
            ("ranges 4\nreplication 1\nnode 1 nowhere cores=1 AA\n", "not an IP:PORT"),
            ("ranges 4\nreplication 2\nnode 1 127.0.0.1:1 cores=1 SHA256:AAAA\n", "not a fingerprint"),
            ("ranges 4\nreplication 3\n", "1 to 64 nodes"),
            ("replication 1\n", "no `ranges` line"),
            ("ranges 4\nreplication 1\nfrobnicate\n", "unknown keyword"),
        ];
        for (text, want) in cases {
            let e = Membership::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let twice = format!(
            "ranges 4\nreplication 1\nnode 1 127.0.0.1:1 cores=1 {}\nnode 2 127.0.0.1:2 cores=1 {}\n",
            fp(1),
            fp(1)
        );
        assert!(Membership::parse(&twice).unwrap_err().contains("fingerprint of another node"));
        let stranger = format!("ranges 4\nreplication 1\nnode 1 127.0.0.1:1 cores=1 {}\nself 9\n", fp(1));
        assert!(Membership::parse(&stranger).unwrap_err().contains("self 9"));
        let none = format!("ranges 0\nreplication 1\nnode 1 127.0.0.1:1 cores=1 {}\n", fp(1));
        assert!(Membership::parse(&none).unwrap_err().contains("1 to 1024 ranges"));
        let wide = format!("ranges 4\nreplication 1\nnode 1 127.0.0.1:65535 cores=2 {}\n", fp(1));
        assert!(Membership::parse(&wide).unwrap_err().contains("does not fit"));
    }
}
