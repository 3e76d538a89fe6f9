//! Admission before login: how many connections of one core may be waiting to authenticate,
//! per source address and in all. A peer that opens connections and trickles its handshake
//! (or never sends it) holds a connection slot until the handshake timeout; without these
//! caps a few hundred such connections from one address held every slot and no one could log in.
//! With them, one address holds at most its share of this core's login slots, and all waiting
//! logins together at most theirs of the connection limit, so logged-in users always have room.
//!
//! Per core (no shared state): the kernel spreads one address's connections over the cores, so
//! each core enforces its share of the server-wide caps. No I/O: the accept loop asks, the
//! connection gives its slot back when it logs in or closes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

pub struct Admission {
    per_address_max: usize,
    total_max: usize,
    by_address: RefCell<HashMap<IpAddr, usize>>,
    total: Cell<usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Address,
    Total,
}

/// A login slot, held while the connection has not authenticated; given back on `release` or
/// when dropped.
pub struct Slot {
    admission: Rc<Admission>,
    address: Option<IpAddr>,
    held: Cell<bool>,
}

impl Admission {
    /// This core's share (of `cores`) of the server-wide caps.
    pub fn new(per_address_max: usize, total_max: usize, cores: usize) -> Rc<Admission> {
        let share = |n: usize| n.div_ceil(cores.max(1)).max(1);
        Rc::new(Admission {
            per_address_max: share(per_address_max),
            total_max: share(total_max),
            by_address: RefCell::new(HashMap::new()),
            total: Cell::new(0),
        })
    }

    /// A slot for a new connection from `address`, or why there is none.
    pub fn admit(self: &Rc<Self>, address: Option<IpAddr>) -> Result<Slot, Refused> {
        if self.total.get() >= self.total_max {
            return Err(Refused::Total);
        }
        if let Some(a) = address {
            let mut by = self.by_address.borrow_mut();
            let n = by.entry(a).or_insert(0);
            if *n >= self.per_address_max {
                return Err(Refused::Address);
            }
            *n += 1;
        }
        self.total.set(self.total.get() + 1);
        Ok(Slot { admission: self.clone(), address, held: Cell::new(true) })
    }

    /// Connections of this core waiting to log in.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.total.get()
    }
}

impl Slot {
    /// Give the slot back (the connection logged in, or is closing).
    pub fn release(&self) {
        if !self.held.replace(false) {
            return;
        }
        let a = &self.admission;
        a.total.set(a.total.get() - 1);
        if let Some(addr) = self.address {
            let mut by = a.by_address.borrow_mut();
            if let Some(n) = by.get_mut(&addr) {
                *n -= 1;
                if *n == 0 {
                    // The map holds only addresses with connections waiting: bounded by them.
                    by.remove(&addr);
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all_with_slots_given_back() {
        let a = Admission::new(4, 6, 2); // this core: 2 per address, 3 in all
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(Some(x)).unwrap();
        let _s2 = a.admit(Some(x)).unwrap();
        assert_eq!(a.admit(Some(x)).err(), Some(Refused::Address));
        let s3 = a.admit(Some(y)).unwrap();
        assert_eq!(a.admit(Some(y)).err(), Some(Refused::Total));
        s1.release();
        s1.release(); // twice is once
        assert_eq!(a.waiting(), 2);
        let _s4 = a.admit(Some(x)).unwrap();
        drop(s3);
        assert_eq!(a.waiting(), 2);
        assert_eq!(a.by_address.borrow().get(&y), None, "an address with none waiting is forgotten");
    }
}
