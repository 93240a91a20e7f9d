//! The device layer: registry, one actor per key, CTAPHID and APDU engines.

pub mod record;
