//! From watcher events to store batches, without a server: [`Signal`]s (watcher events with
//! their objects already parsed) feed an [`EventBatcher`], which keeps per kind the units in
//! force and a hash of each, turns a re-list into replacements plus removals of what vanished,
//! drops no-op updates and coalesces everything pending into one [`Batch`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::api::DynamicObject;
use kube::runtime::watcher;
use mesh_api::Kind;
use mesh_model::{Batch, Update};

use crate::convert::{Converted, convert, unit_of};

/// One thing a kind's watcher reports.
#[derive(Debug)]
pub enum Signal {
    /// A (re-)list starts: what it does not list by [`Signal::InitDone`] is gone.
    Init,
    /// An object listed during a (re-)list.
    InitApply(Converted),
    /// The (re-)list is complete.
    InitDone,
    /// An object was added or modified.
    Apply(Converted),
    /// An object was deleted (its unit).
    Delete(Arc<str>),
    /// The kind's API is not served (its CRD is not installed, or was removed): it has no
    /// objects, and it counts as synced.
    NotServed,
}

impl Signal {
    /// Parses a watcher event's object (read at `api_version`) into a signal.
    pub fn from_event(kind: Kind, api_version: &str, ev: watcher::Event<DynamicObject>) -> Signal {
        match ev {
            watcher::Event::Init => Signal::Init,
            watcher::Event::InitApply(o) => Signal::InitApply(convert(kind, api_version, o)),
            watcher::Event::InitDone => Signal::InitDone,
            watcher::Event::Apply(o) => Signal::Apply(convert(kind, api_version, o)),
            watcher::Event::Delete(o) => Signal::Delete(unit_of(kind, &o)),
        }
    }
}

/// What a kind contributes.
#[derive(Debug, Default)]
struct KindState {
    /// Units in force (sent to the store) and the hash of the content sent.
    known: HashMap<Arc<str>, u64>,
    /// During a re-list: the units listed so far and the changed ones, held until `InitDone`
    /// so the re-list applies atomically.
    relist: Option<Relist>,
    /// Whether a list of this kind completed at least once (or the kind is not served).
    synced: bool,
}

#[derive(Debug, Default)]
struct Relist {
    seen: HashSet<Arc<str>>,
    changed: Vec<Converted>,
}

/// Per-kind state and the updates waiting for the next batch.
#[derive(Debug)]
pub struct EventBatcher {
    kinds: HashMap<Kind, KindState>,
    /// Latest update of each unit since the last batch (a later one replaces an earlier one).
    pending: HashMap<Arc<str>, Update>,
}

impl EventBatcher {
    /// A batcher expecting a first list of each of `kinds` before it is synced.
    pub fn new(kinds: &[Kind]) -> Self {
        EventBatcher {
            kinds: kinds.iter().map(|k| (*k, KindState::default())).collect(),
            pending: HashMap::new(),
        }
    }

    /// Takes in one signal of `kind` (a kind not given to [`EventBatcher::new`] is ignored).
    pub fn handle(&mut self, kind: Kind, signal: Signal) {
        let Some(st) = self.kinds.get_mut(&kind) else { return };
        let pending = &mut self.pending;
        match signal {
            Signal::Init => st.relist = Some(Relist::default()),
            Signal::InitApply(c) => match &mut st.relist {
                Some(r) => {
                    r.seen.insert(c.unit.clone());
                    if st.known.get(&c.unit) != Some(&c.hash) {
                        r.changed.push(c);
                    }
                }
                // Not announced by `Init` (not what kube's watcher does): take it as an update.
                None => apply(st, pending, c),
            },
            Signal::InitDone => {
                let r = st.relist.take().unwrap_or_default();
                let gone: Vec<Arc<str>> = st.known.keys().filter(|u| !r.seen.contains(*u)).cloned().collect();
                for unit in gone {
                    st.known.remove(&unit);
                    pending.insert(unit.clone(), Update::Remove { unit });
                }
                for c in r.changed {
                    apply(st, pending, c);
                }
                st.synced = true;
            }
            Signal::Apply(c) => apply(st, pending, c),
            Signal::Delete(unit) => {
                if st.known.remove(&unit).is_some() {
                    pending.insert(unit.clone(), Update::Remove { unit });
                }
            }
            Signal::NotServed => {
                st.relist = None;
                for (unit, _) in st.known.drain() {
                    pending.insert(unit.clone(), Update::Remove { unit });
                }
                st.synced = true;
            }
        }
    }

    /// Whether every kind completed its first list (the model is complete).
    pub fn synced(&self) -> bool {
        self.kinds.values().all(|k| k.synced)
    }

    /// The kinds whose first list is not complete yet.
    pub fn unsynced(&self) -> Vec<Kind> {
        let mut v: Vec<Kind> = self.kinds.iter().filter(|(_, s)| !s.synced).map(|(k, _)| *k).collect();
        v.sort();
        v
    }

    /// Whether updates wait for the next batch.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Units currently in force (all kinds).
    pub fn known_units(&self) -> usize {
        self.kinds.values().map(|k| k.known.len()).sum()
    }

    /// Everything pending, as one batch.
    pub fn take(&mut self) -> Batch {
        Batch { updates: self.pending.drain().map(|(_, u)| u).collect() }
    }
}

fn apply(st: &mut KindState, pending: &mut HashMap<Arc<str>, Update>, c: Converted) {
    if st.known.get(&c.unit) == Some(&c.hash) {
        return;
    }
    st.known.insert(c.unit.clone(), c.hash);
    pending.insert(c.unit.clone(), Update::Replace { unit: c.unit, docs: vec![c.doc], complete: true });
}
