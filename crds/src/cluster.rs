//! Cluster membership as one node sees it: its name, its group tags (BifroMQ's server group
//! tags) and the members it should form a cluster with. The operator sets it on every pod.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One broker node of a cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterMember {
    /// The node's name (the pod name on Kubernetes).
    pub name: String,
    /// Where its management API answers, `host:port` (the pod's stable DNS name on Kubernetes).
    pub address: String,
    /// Where MQTT clients reach it, `host:port` (used as the v5 Server Reference when a
    /// traffic rule places a client there).
    #[serde(default)]
    pub mqtt_address: Option<String>,
    /// The node's group tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where its cluster listener answers, `host:port`; peers link to it there. Without it
    /// the member is listed but not linked.
    #[serde(default)]
    pub cluster_address: Option<String>,
}

/// `GET`/`PUT /api/v1/cluster`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterMembership {
    /// This node's name; read-only (a `PUT` with another name is refused).
    pub node: String,
    /// Group tags of this node, e.g. a zone; sorted and without duplicates.
    pub tags: Vec<String>,
    /// The cluster's members, this node included.
    pub members: Vec<ClusterMember>,
}

impl ClusterMembership {
    /// Checks names, addresses and duplicates; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (i, t) in self.tags.iter().enumerate() {
            if t.is_empty() || t.len() > 63 {
                return Err(format!("tags[{i}] must be 1 to 63 characters"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.name.is_empty() {
                return Err(format!("members[{i}].name must not be empty"));
            }
            if !names.insert(&m.name) {
                return Err(format!("members[{i}].name {:?} appears twice", m.name));
            }
            if !is_host_port(&m.address) {
                return Err(format!("members[{i}].address must be host:port, got {:?}", m.address));
            }
            if let Some(a) = &m.cluster_address
                && !is_host_port(a)
            {
                return Err(format!("members[{i}].cluster_address must be host:port, got {a:?}"));
            }
        }
        Ok(())
    }
}

fn is_host_port(address: &str) -> bool {
    let port = address.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p));
    port.and_then(|p| p.parse::<u16>().ok()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, address: &str) -> ClusterMember {
        ClusterMember { name: name.into(), address: address.into(), ..Default::default() }
    }

    #[test]
    fn membership_validation_names_the_bad_field() {
        let mut m =
            ClusterMembership { node: "a".into(), tags: vec!["zone-a".into()], members: vec![member("a", "a:8081")] };
        assert_eq!(m.validate(), Ok(()));
        m.members.push(member("a", "b:8081"));
        assert_eq!(m.validate().unwrap_err(), "members[1].name \"a\" appears twice");
        m.members[1] = member("b", "nohost");
        assert!(m.validate().unwrap_err().starts_with("members[1].address"));
        m.members[1] = member("b", "b:8081");
        m.tags.push(String::new());
        assert!(m.validate().unwrap_err().starts_with("tags[1]"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<ClusterMembership>(r#"{"node":"a","memberz":[]}"#).unwrap_err();
        assert!(e.to_string().contains("memberz"), "{e}");
    }
}
