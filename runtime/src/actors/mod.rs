//! Virtual actors in the sidecar: registration from the app's `/dapr/config`,
//! placement lookups, turn-based calls routed to the owning host, actor state,
//! and (in `reminders`) timers and reminders.

pub mod reminders;
