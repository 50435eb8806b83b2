//! Starling's MQTT 3.1.1/5.0 broker: listeners and connection state machine (`mqtt`), sessions,
//! router (topic trie, shared subscriptions, retained), embedded store, tenancy and `$SYS`.

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod router;
pub mod rules;
pub mod server;
pub mod session;
pub mod store;
pub mod sys;
pub mod topic;
pub mod traffic;

pub use broker::Broker;
pub use config::Config;
