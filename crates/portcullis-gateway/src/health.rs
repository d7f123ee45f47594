//! Liveness and readiness, as `/livez` and `/readyz` report them.
//!
//! `/readyz` is 200 while the gateway can serve, `degraded` included (a shared-store
//! outage must not turn into a fleet-wide 503), and 503 with status `down` only while
//! draining for shutdown.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value, json};

/// A component's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Working.
    Ok,
    /// Working on a fallback.
    Degraded,
    /// Not working.
    Down,
}

impl Status {
    /// The word `/readyz` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
}

/// What a component reports.
#[derive(Clone, Debug)]
pub struct ComponentHealth {
    /// Its state.
    pub status: Status,
    /// Further fields (`backend`, `breaker`, `last_error`, …).
    pub details: Map<String, Value>,
}

/// Something whose health `/readyz` reports.
pub trait HealthComponent: Send + Sync + fmt::Debug {
    /// The key under `components`.
    fn name(&self) -> &'static str;
    /// The current state.
    fn check(&self) -> ComponentHealth;
}

/// The gateway's health.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    components: RwLock<Vec<Arc<dyn HealthComponent>>>,
}

impl Health {
    /// A healthy gateway with no components yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a component to the report.
    pub fn register(&self, c: Arc<dyn HealthComponent>) {
        self.components.write().expect("health lock").push(c);
    }

    /// From now on `/readyz` says `down`.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The overall status and the `/readyz` body.
    pub fn readiness(&self) -> (Status, Value) {
        let mut components = Map::new();
        let mut overall = Status::Ok;
        for c in self.components.read().expect("health lock").iter() {
            let h = c.check();
            overall = overall.max(h.status);
            let mut obj = Map::new();
            obj.insert("status".into(), Value::from(h.status.as_str()));
            obj.extend(h.details);
            components.insert(c.name().into(), Value::Object(obj));
        }
        if self.is_draining() {
            overall = Status::Down;
        }
        (
            overall,
            json!({ "status": overall.as_str(), "components": components }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Status);
    impl HealthComponent for Fixed {
        fn name(&self) -> &'static str {
            "store"
        }
        fn check(&self) -> ComponentHealth {
            ComponentHealth {
                status: self.0,
                details: Map::new(),
            }
        }
    }

    #[test]
    fn degraded_component_and_draining() {
        let h = Health::new();
        assert_eq!(h.readiness().0, Status::Ok);
        h.register(Arc::new(Fixed(Status::Degraded)));
        let (s, body) = h.readiness();
        assert_eq!(s, Status::Degraded);
        assert_eq!(body["components"]["store"]["status"], "degraded");
        h.set_draining();
        assert_eq!(h.readiness().1["status"], "down");
    }
}
