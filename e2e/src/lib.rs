//! Starling's end-to-end harness: thin Rust orchestration over `e2e/cluster/*.sh`, shared by the
//! `e2e` binary (`up`, `down`, `image`) and the e2e test suite (`tests/e2e`).

pub mod cluster;
pub mod cmd;
pub mod demo;
pub mod dns;
pub mod fence;
pub mod helm;
pub mod image;
pub mod kubectl;
pub mod mqtt;
pub mod remote;
pub mod wait;
