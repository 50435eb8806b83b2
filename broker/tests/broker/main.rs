//! Integration tests of the broker: real `starling-broker` processes, real MQTT clients
//! (rumqttc 3.1.1 and 5.0, mosquitto_pub/sub, paho-mqtt) and a byte-level client for reason codes.

mod admin;
mod admin_views;
mod bridges;
mod clients;
mod harness;
mod raw;

mod acks;
mod bad_input;
mod cluster;
mod connect;
mod durability;
mod interop;
mod listeners;
mod properties;
mod qos;
mod retained_will;
mod rules;
mod running;
mod sessions;
mod subscriptions;
mod sys_tenancy;
mod traffic;
