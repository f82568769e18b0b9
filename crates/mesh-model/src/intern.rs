//! String and label-set interning, so 10,000 workloads share one copy of each namespace,
//! node, service account and label set (the model's memory budget is < 1 KB per workload).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use mesh_api::SpiffeId;

/// A sorted, interned set of labels (`key=value`). Pods of one Deployment share one copy.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| self.0[i].1.as_ref())
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both are the same interned set (pods of one Deployment share one): a pointer
    /// comparison, where `==` compares every pair.
    pub fn same(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether every label of `selector` is present here with the same value (an empty
    /// selector matches everything, as `matchLabels: {}` does).
    pub fn matches(&self, selector: &Labels) -> bool {
        selector.0.iter().all(|(k, v)| self.get(k) == Some(v.as_ref()))
    }

    /// Builds labels without interning (tests, callers outside a translation).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut v: Vec<(Arc<str>, Arc<str>)> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        Labels(v.into())
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Serializes through `Display` (identities in dumps).
pub(crate) fn ser_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Interns strings, label sets and identities during one translation. The sets hash with
/// foldhash (randomly seeded per process, so crafted names cannot force collisions): every
/// pod's strings and label set pass through here, and SipHash made that a quarter of a
/// 100,000-workload translation.
#[derive(Default)]
pub(crate) struct Interner {
    strings: foldhash::HashSet<Arc<str>>,
    labels: foldhash::HashSet<Labels>,
    identities: foldhash::HashMap<(Arc<str>, Arc<str>), Arc<SpiffeId>>,
    empty: Option<Arc<str>>,
}

impl Interner {
    pub(crate) fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    pub(crate) fn empty(&mut self) -> Arc<str> {
        self.empty.get_or_insert_with(|| Arc::from("")).clone()
    }

    pub(crate) fn labels(&mut self, map: Option<&BTreeMap<String, String>>) -> Labels {
        let Some(map) = map.filter(|m| !m.is_empty()) else {
            return self.labels_from_vec(Vec::new());
        };
        // BTreeMap iterates in key order, which is the order `Labels` keeps.
        let pairs = map.iter().map(|(k, v)| (self.str(k), self.str(v))).collect();
        self.labels_from_vec(pairs)
    }

    fn labels_from_vec(&mut self, pairs: Vec<(Arc<str>, Arc<str>)>) -> Labels {
        let l = Labels(pairs.into());
        if let Some(existing) = self.labels.get(&l) {
            return existing.clone();
        }
        self.labels.insert(l.clone());
        l
    }

    /// The shared identity of a service account, or `None` when the names are not valid
    /// SPIFFE segments.
    pub(crate) fn identity(
        &mut self,
        trust_domain: &str,
        ns: &Arc<str>,
        sa: &Arc<str>,
    ) -> Option<Arc<SpiffeId>> {
        let key = (ns.clone(), sa.clone());
        if let Some(id) = self.identities.get(&key) {
            return Some(id.clone());
        }
        let id = Arc::new(SpiffeId::new(trust_domain, ns, sa).ok()?);
        self.identities.insert(key, id.clone());
        Some(id)
    }
}
