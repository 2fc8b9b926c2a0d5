//! Partition assignors run by the group leader: `range` and `roundrobin`, with the same results
//! as the Java client and librdkafka, so mixed groups agree.

use std::collections::BTreeMap;

/// An assignment strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, consecutive partition ranges to members in member-id order.
    Range,
    /// All partitions in (topic, partition) order dealt to subscribed members in turn.
    RoundRobin,
}

impl Assignor {
    /// Protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor with protocol name `name`.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Assigns the partitions of `partitions` (topic -> count) to `members` (member id ->
    /// subscribed topics). Every member gets an entry, possibly empty.
    pub fn assign(
        self,
        members: &BTreeMap<String, Vec<String>>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, Vec<i32>)>> {
        let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
            .keys()
            .map(|m| (m.clone(), BTreeMap::new()))
            .collect();
        let subscribed = |topic: &str| -> Vec<&String> {
            members
                .iter()
                .filter(|(_, ts)| ts.iter().any(|t| t == topic))
                .map(|(m, _)| m)
                .collect()
        };
        match self {
            Assignor::Range => {
                for (topic, &n) in partitions {
                    let ms = subscribed(topic);
                    if ms.is_empty() {
                        continue;
                    }
                    let per = n as usize / ms.len();
                    let extra = n as usize % ms.len();
                    let mut next = 0i32;
                    for (i, m) in ms.iter().enumerate() {
                        let count = (per + usize::from(i < extra)) as i32;
                        let parts: Vec<i32> = (next..next + count).collect();
                        next += count;
                        if !parts.is_empty() {
                            out.get_mut(*m).unwrap().insert(topic.clone(), parts);
                        }
                    }
                }
            }
            Assignor::RoundRobin => {
                let all: Vec<&String> = members.keys().collect();
                let mut turn = 0usize;
                for (topic, &n) in partitions {
                    for p in 0..n {
                        // The next member in the cycle that subscribes to this topic.
                        for _ in 0..all.len() {
                            let m = all[turn % all.len()];
                            turn += 1;
                            if members[m].iter().any(|t| t == topic) {
                                out.get_mut(m)
                                    .unwrap()
                                    .entry(topic.clone())
                                    .or_default()
                                    .push(p);
                                break;
                            }
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|(m, ts)| (m, ts.into_iter().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn count(parts: &[(&str, i32)]) -> BTreeMap<String, i32> {
        parts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions() {
        let a = Assignor::Range.assign(
            &members(&[("a", &["t"]), ("b", &["t"])]),
            &count(&[("t", 3)]),
        );
        assert_eq!(a["a"], vec![("t".to_string(), vec![0, 1])]);
        assert_eq!(a["b"], vec![("t".to_string(), vec![2])]);
    }

    #[test]
    fn roundrobin_deals_in_order_and_respects_subscriptions() {
        let a = Assignor::RoundRobin.assign(
            &members(&[("a", &["t", "u"]), ("b", &["t"])]),
            &count(&[("t", 3), ("u", 2)]),
        );
        assert_eq!(
            a["a"],
            vec![("t".into(), vec![0, 2]), ("u".into(), vec![0, 1])]
        );
        assert_eq!(a["b"], vec![("t".to_string(), vec![1])]);
    }

    #[test]
    fn every_partition_is_assigned_exactly_once() {
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            for n_members in 1..6 {
                let ms: Vec<(String, Vec<String>)> = (0..n_members)
                    .map(|i| (format!("m{i}"), vec!["t".into(), "u".into()]))
                    .collect();
                let ms: BTreeMap<_, _> = ms.into_iter().collect();
                let a = assignor.assign(&ms, &count(&[("t", 7), ("u", 3)]));
                let mut seen: Vec<(String, i32)> = a
                    .values()
                    .flatten()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                    .collect();
                seen.sort();
                assert_eq!(seen.len(), 10, "{assignor:?} with {n_members} members");
                seen.dedup();
                assert_eq!(seen.len(), 10);
            }
        }
    }
}
