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
        let (mut ranges, mut replication, mut this) = (None, None, None);
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
                Some("node") if words.len() == 5 => {
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
                    if members.iter().any(|m| m.id == id) {
                        return Err(at(format!("node {id} is named twice")));
                    }
                    if members.iter().any(|m| m.fingerprint == fingerprint) {
                        return Err(at(format!("node {id} has the fingerprint of another node")));
                    }
                    members.push(Member { id, peer, cores, fingerprint });
                }
                Some(w @ ("ranges" | "replication" | "self" | "node")) => {
                    return Err(at(format!("wrong number of fields for {w:?}")))
                }
                Some(w) => return Err(at(format!("unknown keyword {w:?}"))),
            }
        }
        members.sort_by_key(|m| m.id);
        let m = Membership {
            ranges: ranges.ok_or("the cluster file has no `ranges` line")?,
            replication: replication.ok_or("the cluster file has no `replication` line")?,
            members,
            this,
        };
        m.range_map()?;
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
                "node {} {} cores={} {}\n",
                m.id,
                m.peer,
                m.cores,
                fingerprint_text(&m.fingerprint)
            ));
        }
        if let Some(id) = self.this {
            out.push_str(&format!("self {id}\n"));
        }
        out
    }

    pub fn range_map(&self) -> Result<RangeMap, String> {
        let ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        RangeMap::new(self.ranges, self.replication, &ids)
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
