//! Actor timers and reminders: schedules, persistence in the actor state
//! store, and firing on the host that owns the actor.
