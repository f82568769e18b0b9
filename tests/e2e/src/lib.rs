//! Support for the end-to-end tests: [`probe`] is the client the tests run inside lab pods,
//! [`lab`] drives `meshctl lab` (serialised by a lock: the lab's names are machine-wide), and
//! [`sniff`] captures packets on a lab link with an `AF_PACKET` socket, and [`load`] holds
//! the load generators of the capture benchmark.

pub mod conformance;
pub mod lab;
pub mod load;
pub mod probe;
pub mod sniff;
